"""The synthesiser's beat model: lead geometry (the Dower matrix), the one-beat template of asymmetric Gaussian waves
with 3-D amplitudes, and the conditions that edit it (conduction, infarction, hypertrophy, ST/T), each written as its
published criterion with the numbers in comments. src/synth.py samples labels and rhythm and renders records from it.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .config import LEADS

# ----------------------------------------------------------------------------------------------------------------
# Lead geometry. Dower matrix (Dower GE, Machado HB, Osborne JA, "On deriving the electrocardiogram from
# vectorcardiographic leads", Clin Cardiol 1980;3:87-95): Frank X (right->left), Y (head->feet), Z (front->back) to
# V1..V6, I, II. We describe waves in u = (f1, f2, z): f1 = lead I and f2 = 2/sqrt(3) aVF (the hexaxial frontal plane,
# so atan2(f2, f1) is the clinical QRS axis) plus Frank Z; u is an exact linear change of basis of (X, Y, Z).
# ----------------------------------------------------------------------------------------------------------------
DOWER = np.array([
    [-0.515, 0.157, -0.917],  # V1
    [0.044, 0.164, -1.387],   # V2
    [0.882, 0.098, -1.277],   # V3
    [1.213, 0.127, -0.601],   # V4
    [1.125, 0.127, -0.086],   # V5
    [0.831, 0.076, 0.230],    # V6
    [0.632, -0.235, 0.059],   # I
    [0.235, 1.066, -0.132],   # II
])
_XYZ_TO_U = np.array([DOWER[6], 2 / np.sqrt(3) * (DOWER[7] - DOWER[6] / 2), [0.0, 0.0, 1.0]])
P8 = np.concatenate([DOWER[6:8], DOWER[:6]]) @ np.linalg.inv(_XYZ_TO_U)  # u -> I, II, V1..V6
# All 12 rows (Einthoven/Goldberger), used to reason about the template; the signal derives them exactly from I, II.
P12 = np.concatenate([P8[:2], [P8[1] - P8[0], -(P8[0] + P8[1]) / 2, P8[0] - P8[1] / 2, P8[1] - P8[0] / 2], P8[2:]])
LI = {name: i for i, name in enumerate(LEADS)}

# Waves of one beat (index into the per-beat arrays). Each is an asymmetric Gaussian with a 3-D amplitude.
P1, P2, DELTA, Q, R1, R2, S, RP, T, U = range(10)
NW = 10
QRS_W = [DELTA, Q, R1, R2, S, RP]
PRE, POST = 0.45, 0.85  # beat window around QRS onset, s (longest PR before, longest QT + U after)

# ----------------------------------------------------------------------------------------------------------------
# Beat template: per-wave centre c (s from QRS onset), left/right widths sl/sr (s) and u-space amplitude a (mV)
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Template:
    c: np.ndarray
    sl: np.ndarray
    sr: np.ndarray
    a: np.ndarray  # (NW, 3)
    st: np.ndarray  # (3,) ST-segment plateau (injury current), from J to T peak
    pr: float
    pd: float
    qrs: float
    qt: float


def clamp(x: float, lo: float, hi: float) -> float:
    return float(min(max(x, lo), hi))  # np.clip costs ~10 us per scalar call


def frontal_vector(theta_deg: float, mag: float, z: float) -> np.ndarray:
    """A u-space vector with frontal axis theta (0 = lead I, +90 = aVF) and magnitude mag, plus Frank Z."""
    th = np.deg2rad(theta_deg)
    return np.array([mag * np.cos(th), mag * np.sin(th), z])


@functools.lru_cache(maxsize=64)
def _pinv(key: bytes) -> np.ndarray:
    return np.linalg.pinv(np.frombuffer(key).reshape(12, 3))


def lead_pattern(P, primary: dict, recip: dict | None = None) -> np.ndarray:
    """u direction whose 12-lead projection best matches a lead pattern (least squares), scaled so the primary
    leads average +1. How injury currents, infarct vectors and pathway vectors are aimed at a territory."""
    d = np.zeros(12)
    for k, v in {**primary, **(recip or {})}.items():
        d[LI[k]] = v
    v = _pinv(np.ascontiguousarray(P, np.float64).tobytes()) @ d
    return v / np.mean(P[[LI[k] for k in primary]] @ v)


def _g(tp: Template, t: np.ndarray) -> np.ndarray:
    x = t[None, :] - tp.c[:, None]
    s = np.where(x < 0, tp.sl[:, None], tp.sr[:, None])
    return np.exp(-0.5 * (x / s) ** 2)


def st_plateau(t, on, off):
    """ST plateau: logistic rise at J (4 ms), logistic fall into the T wave (30 ms)."""
    return 0.25 * (1 + np.tanh((t - on) / 0.008)) * (1 + np.tanh((off - t) / 0.06))


def st_window(tp: Template):
    return tp.qrs - 0.01, tp.c[T]


def _eval(tp: Template, P, t: np.ndarray, qrs_only: bool = False) -> np.ndarray:
    """12-lead (or P's rows) values of the noise-free template beat at times t (s from QRS onset)."""
    if qrs_only:
        a = tp.a[QRS_W]
        x = t[None, :] - tp.c[QRS_W, None]
        return P @ (a.T @ np.exp(-0.5 * (x / np.where(x < 0, tp.sl[QRS_W, None], tp.sr[QRS_W, None])) ** 2))
    u = tp.a.T @ _g(tp, t) + tp.st[:, None] * st_plateau(t, *st_window(tp))[None, :]
    return P @ u


_AXIS_W = [DELTA, Q, R1, R2, S]  # the RBBB R' is left out: in RBBB the axis is read from the first 60-80 ms


def _qrs_net(tp: Template) -> np.ndarray:
    w = _AXIS_W
    return (tp.a[w] * ((tp.sl[w] + tp.sr[w]) / 2 * np.sqrt(2 * np.pi))[:, None]).sum(0)


def qrs_axis(tp: Template) -> float:
    n = _qrs_net(tp)
    return float(np.degrees(np.arctan2(n[1], n[0])))


def set_axis(tp: Template, target: float, waves=(R1, R2, S)) -> None:
    """Rotate the main QRS forces in the frontal plane so that the net-area axis equals target (deg): with the other
    waves' net area F fixed and the rotated waves' net area of length r, solve perp(F + rot(d) M, target) = 0."""
    w = list(waves)
    net = _qrs_net(tp)[:2]
    area = (tp.a[w] * ((tp.sl[w] + tp.sr[w]) / 2 * np.sqrt(2 * np.pi))[:, None]).sum(0)[:2]
    fixed, r = net - area, float(np.hypot(*area))
    th = np.deg2rad(target)
    s = (fixed[0] * np.sin(th) - fixed[1] * np.cos(th)) / max(r, 1e-9)
    want = th + np.arcsin(np.clip(s, -1, 1))  # direction the rotated part must point to
    d = want - np.arctan2(area[1], area[0])
    c, s = np.cos(d), np.sin(d)
    f1, f2 = tp.a[w, 0].copy(), tp.a[w, 1].copy()
    tp.a[w, 0], tp.a[w, 1] = c * f1 - s * f2, s * f1 + c * f2


def place_p(tp: Template) -> None:
    # P: right-atrial then left-atrial half; together they span [-PR, -PR + Pd].
    tp.c[P1], tp.c[P2] = -tp.pr + 0.38 * tp.pd, -tp.pr + 0.62 * tp.pd
    tp.sl[[P1, P2]] = tp.sr[[P1, P2]] = tp.pd / 6.5


def place_t(tp: Template) -> None:
    # T ends at QT (tail 2.4 sd, ~5 % of the peak), slow upslope, faster downslope; U 70 ms after T end.
    sr = clamp(0.12 * (tp.qt - tp.qrs), 0.022, 0.06)
    tp.sr[T], tp.sl[T] = sr, 1.6 * sr
    tp.c[T] = tp.qt - 2.4 * sr
    tp.c[U], tp.sl[U], tp.sr[U] = tp.qt + 0.07, 0.03, 0.03


def set_qrs(tp: Template, qrs: float, start: float = 0.0) -> None:
    """Normal activation sequence in [start, start + qrs]: septal q, early anterior R, main R, terminal S."""
    d = qrs
    for w, f, s in ((Q, .16, .065), (R1, .36, .10), (R2, .50, .10), (S, .72, .09)):
        tp.c[w], tp.sl[w], tp.sr[w] = start + f * d, s * d, s * d


def base_template(rng, hr: float, P) -> Template:
    """A normal adult: HR 50-100, P 80-110 ms, PR 120-200 ms, QRS 80-100 ms, QTc < 450 ms (AHA/ACC/HRS 2009
    standardisation), QRS axis -30..+90 deg, T axis within ~45 deg of the QRS axis, inter-patient amplitude spread."""
    u = rng.uniform(size=16)
    E = float(np.exp(rng.normal(-0.05, 0.2)))  # QRS vector magnitude (body habitus, age, sex)
    axis = clamp(rng.normal(45, 25), -25, 88)
    tp = Template(np.zeros(NW), np.full(NW, 0.01), np.full(NW, 0.01), np.zeros((NW, 3)), np.zeros(3),
                  pr=clamp(rng.normal(0.155, 0.016), 0.125, 0.192), pd=0.08 + 0.025 * u[0],
                  qrs=0.08 + 0.02 * u[1], qt=0.0)
    qtc = clamp(rng.normal(0.405, 0.013), 0.375, 0.435)  # Bazett QTc; normal < 450 ms
    tp.qt = qtc * np.sqrt(60.0 / hr)
    tp.a[P1] = frontal_vector(60 + 20 * u[2], 0.07 + 0.06 * u[3], -0.02 - 0.04 * u[4])  # right atrium: inferior, anterior
    tp.a[P2] = frontal_vector(20 + 35 * u[5], 0.06 + 0.05 * u[6], 0.03 + 0.05 * u[7])  # left atrium: leftward, posterior
    tp.a[Q] = frontal_vector(axis + 180 + rng.normal(0, 25), E * (0.06 + 0.1 * u[8]), -E * (0.02 + 0.06 * u[9]))  # septal
    tp.a[R1] = frontal_vector(axis - 30 * u[10], E * (0.12 + 0.2 * u[11]), -E * (0.3 + 0.25 * u[12]))  # early, anterior
    tp.a[R2] = frontal_vector(axis, E, E * (0.35 + 0.4 * u[13]))  # main LV forces: leftward, inferior, posterior
    tp.a[S] = frontal_vector(axis + 150 + 45 * u[14], E * (0.1 + 0.15 * u[15]), E * (0.3 + 0.25 * rng.random()))
    tp.a[T] = frontal_vector(axis + clamp(rng.normal(-5, 12), -35, 30), 0.17 + 0.25 * rng.random(),
                  -0.08 - 0.2 * rng.random())
    if rng.random() < 0.35:
        tp.a[U] = tp.a[T] * (0.08 + 0.08 * rng.random())
    set_qrs(tp, tp.qrs)
    set_axis(tp, axis)
    return tp


# ----------------------------------------------------------------------------------------------------------------
# Conditions. Each edits the template; criteria and numbers in the comments.
# ----------------------------------------------------------------------------------------------------------------
TERRITORY = {  # (primary leads, reciprocal leads) as lead-pattern weights
    "ant": ({"V1": .6, "V2": 1, "V3": 1, "V4": .8}, {"II": -.3, "III": -.4, "aVF": -.35}),
    "inf": ({"II": .8, "III": 1, "aVF": 1}, {"I": -.4, "aVL": -.8}),
    "lat": ({"I": 1, "aVL": 1, "V5": .9, "V6": 1}, {"III": -.6, "aVF": -.4}),
    "diffuse": ({"I": .6, "II": 1, "aVF": .8, "V3": .7, "V4": 1, "V5": 1, "V6": .9}, {"aVR": -.8}),
}


def _core(terr: str) -> list[int]:
    return [LI[k] for k, v in TERRITORY[terr][0].items() if v >= 0.8]


def apply_cd(rng, tp: Template, sub: str, P) -> float | None:
    """Conduction disturbances; returns a target QRS axis when the subtype defines one."""
    if sub in ("CRBBB", "IRBBB"):
        # RBBB: QRS >= 120 ms, rsR' in V1-V2, wide S in I/V6 (late rightward-anterior RV forces), secondary T
        # inversion V1-V3. Incomplete: same shape with QRS 110-119 ms (AHA/ACC/HRS 2009).
        tp.qrs = rng.uniform(0.125, 0.16) if sub == "CRBBB" else rng.uniform(0.11, 0.118)
        set_qrs(tp, 0.085)
        rp = lead_pattern(P, {"V1": 1, "V2": .8, "aVR": .5}, {"I": -.6, "V6": -.6, "V5": -.4})
        s = (0.018 + 0.006 * rng.random()) if sub == "CRBBB" else 0.012
        tp.c[RP], tp.sl[RP], tp.sr[RP] = tp.qrs - 2.3 * s, 1.3 * s, s
        tp.a[S] *= 0.4  # the slurred terminal S is the R' seen from the left
        tp.a[RP] = rp * (rng.uniform(0.5, 1.1) if sub == "CRBBB" else rng.uniform(0.25, 0.45))
        tp.a[T] = tp.a[T] - rp * rng.uniform(0.15, 0.3) * (sub == "CRBBB")
    elif sub == "CLBBB":
        # LBBB: QRS >= 120 ms (we use 130-170), broad notched R in I/aVL/V5-V6 without septal q, QS/rS in V1-V3,
        # discordant ST-T (ST up where QRS is down, T opposite to the QRS).
        tp.qrs = rng.uniform(0.13, 0.17)
        d = tp.qrs
        lb = lead_pattern(P, {"I": 1, "aVL": .7, "V5": 1, "V6": 1}, {"V1": -1.3, "V2": -1.6, "V3": -1.1})
        m = rng.uniform(0.8, 1.2)
        tp.a[Q] = 0
        tp.a[S] = 0
        tp.a[R1] = lb * m * rng.uniform(0.7, 0.9) + frontal_vector(0, 0, -0.15)
        tp.a[R2] = lb * m * rng.uniform(0.8, 1.0)
        tp.c[R1], tp.sl[R1], tp.sr[R1] = 0.37 * d, 0.15 * d, 0.13 * d
        tp.c[R2], tp.sl[R2], tp.sr[R2] = 0.64 * d, 0.13 * d, 0.12 * d
        tp.a[T] = -lb * rng.uniform(0.2, 0.3) * m
        tp.st = -lb * rng.uniform(0.06, 0.1) * m
        return float(rng.uniform(-20, 40))
    elif sub == "LAFB":
        # LAFB: frontal axis -45..-90 deg, qR in I/aVL, rS in II/III/aVF, QRS < 120 ms (AHA/ACC/HRS 2009).
        if not tp.a[RP].any():  # alone (with RBBB the QRS timing is already set: bifascicular block)
            tp.qrs = max(tp.qrs, rng.uniform(0.09, 0.11))
            set_qrs(tp, tp.qrs)
        tp.a[Q] = frontal_vector(rng.uniform(100, 130), 0.15 + 0.1 * rng.random(), -0.1)  # initial inferior-rightward
        return float(rng.uniform(-80, -48))
    elif sub == "IVCD":
        # Nonspecific intraventricular conduction delay: QRS > 110 ms without RBBB or LBBB morphology (AHA/ACC/HRS
        # 2009); we draw 112-135 ms and keep the normal activation shape.
        tp.qrs = rng.uniform(0.112, 0.135)
        set_qrs(tp, tp.qrs)
    elif sub == "1AVB":
        tp.pr = rng.uniform(0.23, 0.34)  # 1st-degree AV block: PR > 200 ms
    elif sub == "WPW":
        # WPW: PR < 120 ms, delta wave (slurred upstroke 30-60 ms), QRS >= 110 ms, secondary ST-T changes.
        tp.pr = rng.uniform(0.085, 0.11)
        dd = rng.uniform(0.035, 0.055)
        tp.qrs = dd + rng.uniform(0.075, 0.09)
        set_qrs(tp, tp.qrs - dd, start=dd)
        main = tp.a[R2] / np.linalg.norm(tp.a[R2][:2]) * rng.uniform(0.35, 0.55)
        tp.a[DELTA] = main + frontal_vector(0, 0, rng.choice([-0.4, 0.3]))  # type A (anterior) or B pathway
        tp.c[DELTA] = tp.c[R2]  # a slow ramp from QRS onset that merges into the R upstroke
        tp.sl[DELTA], tp.sr[DELTA] = tp.c[R2] / 2.6, 0.01
        tp.a[T] = tp.a[T] - main * rng.uniform(0.4, 0.7)
    return None


def mi_qrs(rng, tp: Template, terr: str, P) -> None:
    """Old MI: pathological Q (>= 40 ms or >= 25 % of R; the 4th Universal Definition of MI, 2018, asks >= 30 ms and
    >= 0.1 mV, or QS) in >= 2 contiguous leads, and reduced R: the scar no longer depolarises, so the initial forces
    point away from it. The Q is scaled until, in the 2nd-best territory lead, it is >= 27-36 % of R (Minnesota code
    1-2: Q/R >= 1/3) and >= 0.10-0.14 mV (UDMI: >= 0.1 mV): real old MI is mostly subtle Q, not QS."""
    d = lead_pattern(P, *TERRITORY[terr])
    core = _core(terr)
    for w in (R1, R2):
        proj = np.mean(P[core] @ tp.a[w])
        if proj > 0:
            tp.a[w] = tp.a[w] - rng.uniform(0.55, 0.85) * proj * d
    sq = rng.uniform(0.012, 0.015)
    shift = 0.018
    for w in (R1, R2, S, RP):
        tp.c[w] += shift
    tp.qrs += shift * 0.7
    tp.c[Q], tp.sl[Q], tp.sr[Q] = 2.2 * sq, 2.2 * sq / 2.5, sq
    tp.a[Q] = -0.3 * d
    t = np.arange(0, tp.qrs, 0.002)
    frac, floor = rng.uniform(0.27, 0.36), rng.uniform(0.10, 0.14)
    for _ in range(3):
        v = _eval(tp, P[core], t, True)
        q = -v[:, t < tp.c[Q] + sq].min(1)
        r = v.max(1)
        need = np.maximum(frac * r, floor)
        k = np.sort(need / np.maximum(q, 1e-3))[-2]
        if k <= 1.0:
            break
        tp.a[Q] *= min(k * 1.05, 3.0)


def st_shift(tp: Template, P, direction: np.ndarray, leads: list[int], target: float) -> None:
    """Add an ST plateau along `direction` so that >= 2 of `leads` deviate by >= target mV at J+60 and J+80 ms
    (target > 0: elevation, < 0: depression), measured against the PR-segment baseline as a reader would."""
    t = np.array([tp.qrs + 0.06, tp.qrs + 0.08, -0.5 * (tp.pr - tp.pd)])  # J+60, J+80, mid-PR baseline

    def dev(tpl):
        v = _eval(tpl, P[leads], t)
        return (v[:, :2] - v[:, 2:]).min(1) * np.sign(target)

    base = dev(tp)
    tp.st = tp.st + direction
    unit = dev(tp) - base
    tp.st = tp.st - direction
    ok = unit > 1e-6
    if ok.sum() < 2:
        raise RuntimeError("ST direction does not reach the territory")  # cannot happen with TERRITORY patterns
    k = np.sort((abs(target) - base[ok]) / unit[ok])[1]
    tp.st = tp.st + direction * max(k, 0.0) * 1.03


def _t_invert(tp: Template, P, direction: np.ndarray, leads: list[int], depth: float) -> None:
    """Turn the T wave away from `direction` until >= 2 of `leads` have T <= -depth mV (depth ~0: a flat T)."""
    v, unit = P[leads] @ tp.a[T], P[leads] @ direction
    ok = unit > 1e-6
    k = np.sort((v[ok] + depth) / unit[ok])[1] if ok.sum() >= 2 else 0.0
    tp.a[T] = tp.a[T] - direction * max(k, 0.0)


def apply_mi(rng, tp: Template, sub: str, P) -> None:
    terr = {"A": "ant", "I": "inf", "L": "lat"}[sub[0]]
    d = lead_pattern(P, *TERRITORY[terr])
    if sub.endswith("_old"):
        # T inversion in the infarct territory (mean -0.1..-0.4 mV)
        _t_invert(tp, P, d, _core(terr), rng.uniform(0.1, 0.35))
    else:
        # Acute STEMI: ST elevation >= 0.1 mV in 2 contiguous leads (>= 0.2 mV V2-V3), reciprocal depression, and
        # hyperacute (tall, broad) T. We draw 0.15-0.4 mV so it is visible on paper (1.5-4 mm).
        tp.a[T] = tp.a[T] + d * rng.uniform(0.3, 0.7)
        tp.sl[T] *= 1.2
        tp.sr[T] *= 1.15
        st_shift(tp, P, d, _core(terr), rng.uniform(0.15, 0.4))


def apply_atrial(rng, tp: Template, sub: str, P) -> None:
    """Atrial abnormality by the AHA/ACCF/HRS 2009 recommendations (Hancock et al., part V: chamber hypertrophy)."""
    if sub == "LAE":
        # left: P >= 120 ms, terminal negative P in V1 >= 0.1 mV deep and >= 40 ms long (P-terminal force >= 0.04 mm s):
        # the left atrium's late, posterior forces. We draw 120-150 ms and aim the left-atrial half 0.14-0.24 mV
        # below baseline in V1 (the right-atrial half overlaps it, so the trough ends ~0.1-0.2 mV deep).
        tp.pd = rng.uniform(0.12, 0.15)
        tp.pr = max(tp.pr, min(tp.pd + rng.uniform(0.03, 0.06), 0.198))  # a PR segment remains (PR <= 200 ms)
        r, a = P[LI["V1"]], tp.a[P2]
        a[:2] *= rng.uniform(1.0, 1.4)
        a[2] = (-rng.uniform(0.14, 0.24) - r[0] * a[0] - r[1] * a[1]) / r[2]
    elif sub == "RAE":
        # right (P pulmonale): P >= 0.25 mV in II; we draw 0.25-0.33 mV for the right-atrial half alone
        tp.a[P1] *= rng.uniform(0.25, 0.33) / max(float(P[LI["II"]] @ tp.a[P1]), 1e-3)


def apply_hyp(rng, tp: Template, sub: str, P, voltage: bool = True) -> dict:
    """Scale QRS voltages until the criterion holds; returns the measured criteria for meta. voltage=False: LVH by
    the Romhilt-Estes point score without its voltage points (the caller adds left-atrial abnormality, 3 points, and
    QRS >= 90 ms, 1 point; strain adds 3): voltages stay high-normal, below Sokolow-Lyon."""
    t = np.arange(0, tp.qrs + 0.01, 0.002)
    v = _eval(tp, P, t, True)

    def sokolow(v):  # Sokolow-Lyon: S V1 + max(R V5, R V6) >= 3.5 mV
        return -v[LI["V1"]].min() + max(v[LI["V5"]].max(), v[LI["V6"]].max())

    def cornell(v):  # Cornell voltage: R aVL + S V3 > 2.8 mV (men), > 2.0 mV (women)
        return v[LI["aVL"]].max() - v[LI["V3"]].min()

    for _ in range(4):
        scale = 1.0
        if sub in ("LVH", "LVH_strain") and not voltage:
            sok, cor = sokolow(v), max(cornell(v), 1e-3)
            scale = rng.uniform(2.6, 3.4) / sok
            scale = rng.uniform(1.6, 2.4) / cor if cor * scale > 2.4 else scale
        elif sub in ("LVH", "LVH_strain"):
            sok, cor = sokolow(v), max(cornell(v), 1e-3)
            # drawn close above the criterion: real LVH labels mostly sit just past it (bench.sim2real on the real
            # dev set: median S V1 1.0 mV, R V5 1.3 mV in HYP records), and voltage criteria have ~20-50 %
            # sensitivity, so clinicians often label LVH by Cornell rather than Sokolow
            scale = rng.uniform(3.75, 4.6) / sok
            # Cornell-positive instead; 3.05 (not 2.8) because the normal V2-V3 ST lift shallows the S in V3
            if rng.random() < 0.35 and rng.uniform(3.05, 3.5) / cor * sok < 5.5:
                scale = rng.uniform(3.05, 3.5) / cor
        elif sub == "RVH":
            # RVH: R >= 0.7 mV in V1 with R/S >= 1, right axis (>= +110 deg), deep S in V5-V6 (Sokolow-Lyon RVH).
            rv1 = v[LI["V1"]].max()
            scale = rng.uniform(0.8, 1.3) / max(rv1, 1e-3)
        else:  # no HYP label: keep voltages below both criteria with margin, redrawn (not clipped: no pile-up)
            sok, cor = sokolow(v), max(cornell(v), 1e-3)
            scale = rng.uniform(2.4, 3.3) / sok if sok > 3.3 else 1.0
            scale = rng.uniform(1.2, 1.9) / cor if cor * scale > 1.9 else scale
        # ceiling of what bodies produce: |QRS| <= 3 mV in limb leads, <= 5 mV in chest leads
        peak = np.abs(v).max(1) * scale
        scale *= min(1.0, 3.0 / peak[:6].max(), 5.0 / peak[6:].max())
        if (sub not in ("LVH", "LVH_strain") or not voltage or sokolow(v * scale) >= 3.6
                or cornell(v * scale) >= 2.95):
            break
        # the limb-lead ceiling stopped the voltage short of the criterion (a vertical, large frontal QRS): add
        # posterior LV forces, which grow S V1 / R V5 but not the limb leads, and draw again
        tp.a[R2] = tp.a[R2] + frontal_vector(0, 0, 0.3 * np.linalg.norm(tp.a[R2]))
        v = _eval(tp, P, t, True)
    tp.a[QRS_W] *= scale
    if sub == "LVH_strain":
        # LV strain: ST depression + asymmetric T inversion in I, aVL, V5-V6 (slow descent, fast return).
        lat = lead_pattern(P, {"I": .8, "aVL": .8, "V5": 1, "V6": 1}, {"III": -.4})
        _t_invert(tp, P, lat, [LI[k] for k in ("I", "aVL", "V5", "V6")], rng.uniform(0.15, 0.4))
        tp.sl[T] *= 1.3
        st_shift(tp, P, -lat, _core("lat"), -rng.uniform(0.06, 0.12))
    if sub == "RVH" and rng.random() < 0.5:  # RV strain: T inversion V1-V3
        _t_invert(tp, P, lead_pattern(P, {"V1": 1, "V2": 1, "V3": .8}), [LI["V1"], LI["V2"], LI["V3"]],
                  rng.uniform(0.1, 0.3))
    v = v * scale  # QRS waves are linear in their amplitude
    return {"sokolow_mv": round(float(sokolow(v)), 3), "cornell_mv": round(float(cornell(v)), 3)}


def apply_sttc(rng, tp: Template, sub: str, P, avoid: str | None) -> str:
    """Repolarisation changes in one territory (lateral most often), never the MI territory."""
    terrs = [k for k in ("lat", "inf", "ant", "diffuse") if k != avoid]
    w = np.array([{"lat": .45, "inf": .1, "ant": .15, "diffuse": .3}[k] for k in terrs])
    terr = terrs[int(rng.choice(len(terrs), p=w / w.sum()))]
    d = lead_pattern(P, *TERRITORY[terr])
    core = _core(terr)
    proj = np.mean(P[core] @ tp.a[T])
    if sub == "NST":
        # Nonspecific ST-T abnormality (SNOMED 428750005; PTB-XL NDT/NST_): a flat or low T (<= 0-0.05 mV) in >= 2
        # territory leads, and in half the records a slight ST depression (0.02-0.045 mV: below the 0.05 mV
        # ischaemic threshold of the 4th UDMI)
        _t_invert(tp, P, d, core, -rng.uniform(0.0, 0.05))
        if rng.random() < 0.5:
            st_shift(tp, P, -d, core, -rng.uniform(0.02, 0.045))
    elif sub == "STD":
        # Ischaemic ST depression: horizontal/downsloping >= 0.05 mV in >= 2 contiguous leads (4th UDMI); we draw
        # 0.1-0.25 mV so it is readable on paper (1-2.5 mm); the T flattens.
        tp.a[T] = tp.a[T] - d * max(proj, 0) * rng.uniform(0.3, 0.8)
        st_shift(tp, P, -d, core, -rng.uniform(0.1, 0.25))
    else:
        # T-wave inversion (>= 0.1 mV in 2 contiguous leads) or flat T (|T| < 0.1 mV where R is dominant).
        _t_invert(tp, P, d, core, rng.uniform(0.12, 0.45) if rng.random() < 0.75 else rng.uniform(0.0, 0.04))
    return terr
