"""Knowledge-driven 12-lead ECG synthesiser: Gaussian waves on a 3-D heart vector, projected with the Dower matrix.

Idea after Nonaka & Seita ("Boosting ECG classification performance by pre-training with synthesized data"): every
beat is a sum of Gaussian P, Q, R, S, T waves whose parameters encode cardiology. They drew lead II only; here each
wave has a 3-D direction, so the 12 leads are one consistent heart seen from 12 sides. Conditions are written as
published criteria (the numbers sit in comments next to the code), combined per record; label-defining features
(ST shifts, Q waves, voltages, T inversion) are measured on the noise-free beat template and scaled until the criterion
holds, so a label means a feature a reader can see at 25 mm/s, 10 mm/mV.

    python -m src.synth --out input/ecg-synth-signals --n 1000 --seed 0            # WFDB records + labels.csv
    python -m src.synth --n 20 --prevalence MI=0.5,AF=0.2 --plot 8 --workers 1     # and PNGs of 8 records

Python:
    sig, meta = synthesize(np.random.default_rng(0))                           # sampled labels
    sig, meta = synthesize(rng, labels=["1AVB"], hr=70, noise=0, extras=())    # ask for a subtype, a rate, no noise
    sig, meta = synth_record(seed=0, index=17)                                 # record 17 of a seeded set

`labels` is None (sampled with `prevalence`), a 5-vector or {label: 0/1} (subtypes sampled), or a list of tokens:
label names (MI, AF, ...: random subtype), subtypes (SUBTYPES below; aliases AVB1, RBBB, LBBB, AFL), extras (PVC,
PAC, SARRH, SBRAD, STACH) or "NORM". Signals are float32 mV [12, n] in LEADS order; meta is JSON-serialisable.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import numpy as np

from .beat import (LI, NW, P1, P12, P2, POST, PRE, QRS_W, R1, R2, T, Template, U, apply_atrial, apply_cd, apply_hyp,
                   apply_mi, apply_sttc, base_template, clamp, frontal_vector, lead_pattern, mi_qrs, place_p, place_t,
                   qrs_axis, set_axis, set_qrs, st_plateau, st_shift, st_window)
from .config import LABELS, LEADS, config_dict, parse_args, paths
from .signals import write_wfdb
from .utils import parallel_map, write_csv, write_json

# ----------------------------------------------------------------------------------------------------------------
# Labels, subtypes and the sampler
# ----------------------------------------------------------------------------------------------------------------
DEFAULT_PREVALENCE = {"MI": 0.25, "AF": 0.07, "HYP": 0.12, "CD": 0.21, "STTC": 0.24}  # BHF training prevalences
# Relative frequencies follow the PTB-XL statement counts (Wagner et al., Sci Data 2020; 21,837 records), the label
# semantics of real datasets: MI is mostly old MI (IMI 2685 incl. ILMI, ASMI/AMI 2711, ALMI/LMI 491 vs ~410 injury
# statements INJAS/INJAL/INJIN/INJLA/INJIL, i.e. ~7 % acute); CD follows the CinC-2021 scored-label counts over its six
# 12-lead sources (Reyna et al. 2021, dx_mapping_scored.csv: PTB-XL's LAFB 1626, IRBBB 1118, 1AVB 797, IVCD 789, CRBBB
# 542, CLBBB 536, WPW 80 plus Chapman/Ningbo/Georgia/CPSC/CPSC-Extra's RBBB+CRBBB 4286, IAVB 2737, NSIVCD 978,
# LBBB+CLBBB 957, IRBBB 739, LAnFB 560, WPW 74: RBBB 31 %, IAVB 22 %, LAFB 14 %, IRBBB 12 %, IVCD 11 %, LBBB 9 %),
# where RBBB and first-degree AV block dominate rather than PTB-XL's LAFB; STTC: non-diagnostic T / nonspecific ST
# (NDT 1829, NST_ 770, DIG 181, EL 97) outnumber ischaemic ST-T (ISC_* 2645), long QT 118; HYP, CinC-2021 with PTB-XL:
# LVH 4175, left atrial enlargement ~1300 (67741000119109 872 + PTB-XL LAO/LAE 427), RVH 342, right atrial
# abnormality ~150 (446358003 54 + PTB-XL RAO/RAE 99); LVH with strain ~ a third of LVH.
SUBTYPES: dict[str, dict[str, float]] = {  # subtype -> relative frequency within its label
    "MI": {"IMI_old": .42, "AMI_old": .42, "LMI_old": .09, "IMI_acute": .02, "AMI_acute": .04, "LMI_acute": .01},
    "AF": {"AFIB": .90, "AFLT": .10},
    "HYP": {"LVH": .47, "LVH_strain": .23, "LAE": .21, "RVH": .06, "RAE": .03},
    "CD": {"CRBBB": .30, "CLBBB": .09, "IRBBB": .12, "LAFB": .14, "1AVB": .22, "IVCD": .11, "WPW": .02},
    "STTC": {"NST": .50, "STD": .20, "TINV": .27, "LNGQT": .03},
}
SUBTYPE_LABEL = {s: lab for lab, d in SUBTYPES.items() for s in d}
EXTRAS = ("PVC", "PAC", "SARRH", "SBRAD", "STACH")
ALIASES = {"AVB1": "1AVB", "RBBB": "CRBBB", "LBBB": "CLBBB", "AFL": "AFLT"}
# Pairs we do not model (physiologically contradictory or undefined): PR is undefined without P waves, etc.
CONFLICTS = [({"AFIB", "AFLT"}, {"1AVB", "WPW"}), ({"RVH"}, {"LAFB"}), ({"CRBBB"}, {"CLBBB", "IRBBB"}),
             ({"CLBBB"}, {"IRBBB", "LAFB"}), ({"WPW"}, {"CRBBB", "CLBBB", "IRBBB", "LAFB", "1AVB"}),
             ({"IVCD"}, {"CRBBB", "CLBBB", "IRBBB", "WPW"}),
             ({"LVH", "LVH_strain"}, {"RVH"}), ({"LVH"}, {"LVH_strain"}), ({"AFIB"}, {"AFLT"}),
             ({"AFIB", "AFLT"}, {"LAE", "RAE"})]  # atrial abnormality is read from P waves
SECOND_CD = {"CRBBB": ["LAFB", "1AVB"], "CLBBB": ["1AVB"], "LAFB": ["1AVB"], "IRBBB": ["LAFB"]}  # bifascicular...


def parse_prevalence(text: str | dict | None) -> dict[str, float]:
    """'MI=0.3,AF=0.1' or a dict -> full dict over LABELS (unnamed labels keep DEFAULT_PREVALENCE)."""
    out = dict(DEFAULT_PREVALENCE)
    if not text:
        return out
    items = text.items() if isinstance(text, dict) else [kv.split("=", 1) for kv in str(text).split(",") if kv.strip()]
    for kv in items:
        if len(kv) != 2 or kv[0].strip() not in LABELS:
            raise ValueError(f"prevalence item {kv!r}: expected LABEL=p with LABEL in {', '.join(LABELS)}")
        p = float(kv[1])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"prevalence {kv[0]}={p}: must be within [0, 1]")
        out[kv[0].strip()] = p
    return out


def _conflicts(chosen: set[str], cand: str) -> bool:
    return any((cand in a and chosen & b) or (cand in b and chosen & a) for a, b in CONFLICTS)


def _pick(rng, label: str, chosen: set[str]) -> str:
    names = [s for s in SUBTYPES[label] if not _conflicts(chosen, s)]
    w = np.array([SUBTYPES[label][s] for s in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _subtypes_for(rng, vec) -> list[str]:
    """One subtype per positive label (sometimes two for CD/STTC), avoiding unmodelled combinations."""
    chosen: list[str] = []
    for lab in ("AF", "HYP", "CD", "MI", "STTC"):  # AF first: it rules out PR-based CD subtypes
        if vec[LABELS.index(lab)]:
            chosen.append(_pick(rng, lab, set(chosen)))
            if lab == "CD" and rng.random() < 0.12:
                extra = [s for s in SECOND_CD.get(chosen[-1], []) if not _conflicts(set(chosen), s)]
                if extra:
                    chosen.append(extra[int(rng.integers(len(extra)))])
            if lab == "STTC" and rng.random() < 0.2:
                extra = [s for s in SUBTYPES["STTC"] if s not in chosen]
                chosen.append(extra[int(rng.integers(len(extra)))])
    return chosen


def sample_labels(rng: np.random.Generator, prevalence: dict[str, float] | str | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Independent Bernoulli draw per label (so each marginal equals its prevalence) plus fine-grained subtypes."""
    prev = parse_prevalence(prevalence)
    vec = (rng.random(len(LABELS)) < np.array([prev[k] for k in LABELS])).astype(np.int8)
    return vec, _subtypes_for(rng, vec)


def _resolve(rng, labels, prevalence, extras) -> tuple[np.ndarray, list[str], list[str]]:
    """-> (5-vector, subtypes, extras) from any accepted `labels` form."""
    forced_extras: list[str] = []
    if labels is None:
        vec, subs = sample_labels(rng, prevalence)
    elif isinstance(labels, dict) or (not isinstance(labels, str) and len(labels) == len(LABELS)
                                      and all(isinstance(v, (int, np.integer, float, bool, np.bool_)) for v in labels)):
        vals = [labels.get(k, 0) for k in LABELS] if isinstance(labels, dict) else list(labels)
        vec = (np.asarray(vals, float) > 0.5).astype(np.int8)
        subs = _subtypes_for(rng, vec)
    else:
        tokens = [labels] if isinstance(labels, str) else list(labels)
        subs = []
        for tok in tokens:
            tok = ALIASES.get(tok, tok)
            if tok == "NORM":
                continue
            if tok in EXTRAS:
                forced_extras.append(tok)
            elif tok in SUBTYPE_LABEL or tok in LABELS:
                if tok in LABELS:
                    tok = _pick(rng, tok, set(subs))
                bad = [s for s in subs if _conflicts({s}, tok)]
                if bad:
                    raise ValueError(f"subtype {tok} cannot be combined with {bad[0]} in this synthesiser")
                subs.append(tok)
            else:
                raise ValueError(f"unknown label/subtype {tok!r}; use NORM, {', '.join(LABELS)}, "
                                 f"{', '.join(SUBTYPE_LABEL)}, {', '.join(EXTRAS)} or {', '.join(ALIASES)}")
        vec = np.array([any(SUBTYPE_LABEL[s] == k for s in subs) for k in LABELS], np.int8)
    if extras is not None or forced_extras:
        ex = list(dict.fromkeys([*(extras or ()), *forced_extras]))
        unknown = [e for e in ex if e not in EXTRAS]
        if unknown:
            raise ValueError(f"unknown extra {unknown[0]!r}; choose from {', '.join(EXTRAS)}")
    else:  # sampled rhythm extras: PVCs ~8 % of resting ECGs (PTB-XL: PVC 1146 = 5 %, more in older cohorts);
        # in sinus rhythm: PACs 4 % (PTB-XL PAC 398 = 2 %; CinC-2021 PAC+SVPB ~4 %, Reyna et al. 2021), marked sinus
        # arrhythmia 5 % (PTB-XL SARRH 772 = 3.5 %), sinus brady/tachycardia 8 % / 7 % (PTB-XL SBRAD 637, STACH 826)
        ex = ["PVC"] if rng.random() < 0.08 else []
        r = rng.random(3)
        if not vec[LABELS.index("AF")]:
            ex += ["SBRAD"] if r[0] < 0.08 else ["STACH"] if r[0] < 0.15 else []
            ex += ["PAC"] if r[1] < 0.04 else []
            ex += ["SARRH"] if r[2] < 0.05 else []
    return vec, subs, ex


# ----------------------------------------------------------------------------------------------------------------
# Rhythm: QRS onset times (s) for the record, plus atrial activity that is not tied to beats
# ----------------------------------------------------------------------------------------------------------------
def _sinus_onsets(rng, hr: float, seconds: float, marked: bool = False) -> np.ndarray:
    """Sinus rhythm with HRV: respiratory (HF, 0.15-0.4 Hz) and Mayer-wave (LF, ~0.1 Hz) RR modulation. Resting
    10 s RR CV in healthy adults is ~1-6 % (median ~3 %; bench.sim2real on the real dev set: 2.8 % in unlabelled
    records); `marked` sinus arrhythmia swings RR by 8-15 % (> 120 ms at normal rates: the textbook criterion)."""
    rr0 = 60.0 / hr
    k = np.arange(int((seconds + PRE + POST + 2) / (0.8 * rr0)) + 3)
    f_hf, f_lf = rng.uniform(0.15, 0.4), rng.uniform(0.07, 0.12)
    ph = rng.uniform(0, 2 * np.pi, 2)
    a_hf = rng.uniform(0.08, 0.15) if marked else float(np.exp(rng.normal(np.log(0.022), 0.6)))
    rr = rr0 * (1 + min(a_hf, 0.15) * np.sin(2 * np.pi * f_hf * k * rr0 + ph[0])
                + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * f_lf * k * rr0 + ph[1])
                + 0.006 * rng.standard_normal(len(k)))
    return -POST - rng.uniform(0, rr0) + np.cumsum(rr)


def _af_onsets(rng, hr: float, seconds: float) -> np.ndarray:
    """AF: irregularly irregular RR, CV 15-30 % (ventricular response 60-150/min); the draw is standardised so the
    RR intervals inside the record have exactly the sampled mean and CV."""
    rr0, cv = 60.0 / hr, rng.uniform(0.16, 0.3)
    k = int((seconds + PRE + POST + 2) / (0.6 * rr0)) + 6
    rr = np.exp(rng.normal(0, np.sqrt(np.log(1 + cv ** 2)), k))
    t = -POST - rng.uniform(0, rr0) + np.cumsum(np.concatenate([[0.0], rr * rr0]))
    inside = (t[1:] > 0) & (t[1:] < seconds)
    sel = rr[inside] if inside.sum() >= 3 else rr
    rr = rr0 + (rr - sel.mean()) * (cv * rr0 / max(sel.std(), 1e-6))
    rr = np.maximum(rr, 0.3)
    return t[0] + np.cumsum(np.concatenate([[0.0], rr]))


def _afl(rng, hr: float | None, seconds: float, n: int, fs: int, P) -> tuple[np.ndarray, np.ndarray, dict]:
    """Atrial flutter: sawtooth F waves at 250-350/min, negative in II/III/aVF and positive in V1 (typical
    counter-clockwise flutter), conducted 2:1, 3:1, 4:1 or variably. Returns onsets, u-space F waves, meta."""
    ratio = rng.choice(["2:1", "3:1", "4:1", "variable"], p=[.45, .1, .2, .25])
    fa = rng.uniform(250, 350)
    if hr is not None:  # pick the conduction ratio and atrial rate that best give the requested ventricular rate
        k = int(clamp(round(300 / hr), 2, 4))
        ratio, fa = f"{k}:1", clamp(hr * k, 250, 350)
    Fa = fa / 60.0
    t0 = -POST - PRE - rng.uniform(0, 1 / Fa)
    nf = int((seconds + 2 * (PRE + POST)) * Fa) + 8
    steps = (np.full(nf, int(ratio[0])) if ratio != "variable" else rng.choice([2, 3, 4], nf, p=[.5, .15, .35]))
    idx = np.cumsum(steps)
    idx = idx[idx < nf]
    onsets = t0 + idx / Fa + rng.uniform(0.18, 0.26)  # F-to-QRS conduction delay
    ph = ((np.arange(n) / fs - t0) * Fa) % 1.0
    saw = np.where(ph < 0.72, ph / 0.72, (1 - ph) / 0.28) * 2 - 1  # slow rise, sharp fall (sign flipped below)
    d = lead_pattern(P, {"II": 1, "III": 1, "aVF": 1}, {"V1": -.6})
    amp = rng.uniform(0.1, 0.25)
    waves = (-amp * d[:, None] * saw[None, :]).astype(np.float32)
    return onsets, waves, {"atrial_rate": round(fa, 1), "conduction": str(ratio)}


def _fwaves(rng, n: int, fs: int, P) -> tuple[np.ndarray, dict]:
    """AF f-waves: 4-9 Hz, 8-100 uV log-uniform (fine < 50 uV, often invisible on a 10 mm/mV trace; coarse > 50 uV),
    largest in V1 and II/III/aVF; irregular shape and slowly drifting rate, amplitude and direction. Fine waves are
    the common kind in long-standing AF, so the irregular RR and the missing P wave, not the f-waves, must carry AF."""
    f32 = np.float32
    tt = np.arange(n, dtype=f32) / f32(fs)
    f0, amp = rng.uniform(4.5, 8.5), float(np.exp(rng.uniform(np.log(0.01), np.log(0.1))))
    p = rng.uniform(0, 2 * np.pi, 6).astype(f32)
    fm = f32(2 * np.pi * rng.uniform(0.05, 0.2))
    f = f32(f0) + f32(0.6) * np.sin(fm * tt + p[0]) + f32(0.3) * np.sin(f32(2 * np.pi * 0.31) * tt + p[1])
    ph = np.cumsum(f, dtype=np.float64).astype(f32) * f32(2 * np.pi / fs) + p[2]
    w = (np.sin(ph) + f32(0.35) * np.sin(2 * ph + p[3])) * (1 + f32(0.35) * np.sin(f32(2 * np.pi * 0.23) * tt + p[4]))
    d1 = lead_pattern(P, {"V1": 1, "II": .7, "III": .8, "aVF": .8}).astype(f32)
    d2 = lead_pattern(P, {"V1": 1, "V2": .6, "III": .5}).astype(f32)
    mix = f32(0.5) + f32(0.5) * np.sin(f32(2 * np.pi * 0.11) * tt + p[5])
    w *= f32(amp / 1.3)
    return (d2[:, None] + (d1 - d2)[:, None] * mix) * w, {"f_hz": round(f0, 2), "f_mv": round(amp, 3)}


# ----------------------------------------------------------------------------------------------------------------
# Rendering: the template beat is evaluated once on the sample grid (depolarisation: P, QRS, ST plateau; and
# repolarisation: T, U) and added at every beat's onset (per-beat loop of slice-adds; the T part moves with the QT of
# that beat). Onsets are rounded to the sample grid (2 ms at 500 Hz).
# ----------------------------------------------------------------------------------------------------------------
_DEPOL = np.array([P1, P2, *QRS_W])
_REPOL = np.array([T, U])


def _part(tp: Template, waves: np.ndarray, fs: int, plateau: bool) -> tuple[int, np.ndarray]:
    """(first sample from QRS onset, u-space values [3, m] in float32) of some waves, on their support only
    (+-4.5 sd: the tail left out is < 5e-5 of the peak)."""
    w = waves[np.abs(tp.a[waves]).sum(1) > 0]  # only the waves this patient has
    if not len(w) and not plateau:
        return 0, np.zeros((3, 0), np.float32)
    lo, hi = (tp.c[w] - 4.5 * tp.sl[w]).min(initial=np.inf), (tp.c[w] + 4.5 * tp.sr[w]).max(initial=-np.inf)
    on, off = st_window(tp)
    if plateau:
        lo, hi = min(lo, on - 0.04), max(hi, off + 0.25)
    i0, i1 = int(np.floor(lo * fs)), int(np.ceil(hi * fs)) + 1
    t = np.arange(i0, i1, dtype=np.float32) / np.float32(fs)
    x = t[None, :] - tp.c[w, None].astype(np.float32)
    x *= np.where(x < 0, (1 / tp.sl[w, None]).astype(np.float32), (1 / tp.sr[w, None]).astype(np.float32))
    u = tp.a[w].T.astype(np.float32) @ np.exp(np.float32(-0.5) * x * x)
    if plateau:
        u += tp.st[:, None].astype(np.float32) * st_plateau(t, on, off)[None, :]
    return i0, u


def _parts(tp: Template, fs: int) -> tuple[int, np.ndarray, int, np.ndarray]:
    """Depolarisation (P, QRS, ST plateau) and repolarisation (T, U) parts of the template beat."""
    return (*_part(tp, _DEPOL, fs, bool(tp.st.any())), *_part(tp, _REPOL, fs, False))


def _render(tp: Template, onsets, qt_b, amp_b, pvc, pvc_tp, fs: int, n: int) -> np.ndarray:
    pad = int(np.ceil(2 * (PRE + POST) * fs))  # wider than any beat's reach beyond the kept onsets
    out = np.zeros((3, n + 2 * pad), np.float32)
    k = np.round(onsets * fs).astype(np.int64) + pad
    kt = np.round((onsets + qt_b - tp.qt) * fs).astype(np.int64) + pad  # T follows this beat's QT
    d0, dep, r0, rep = _parts(tp, fs)
    deps = dep[None] * amp_b.astype(np.float32)[:, None, None]  # every beat's depolarisation, scaled at once
    md, mr = dep.shape[1], rep.shape[1]
    for b in np.flatnonzero(~pvc):
        out[:, k[b] + d0:k[b] + d0 + md] += deps[b]
        out[:, kt[b] + r0:kt[b] + r0 + mr] += rep
    if pvc.any():
        d0, dep, r0, rep = _parts(pvc_tp, fs)
        for b in np.flatnonzero(pvc):
            out[:, k[b] + d0:k[b] + d0 + dep.shape[1]] += dep
            out[:, k[b] + r0:k[b] + r0 + rep.shape[1]] += rep
    return out[:, pad:pad + n]


def _pvc_template(rng, P) -> Template:
    """Premature ventricular complex: no P, wide (130-180 ms) bizarre QRS from an ectopic focus, T opposite."""
    tp = Template(np.zeros(NW), np.full(NW, 0.01), np.full(NW, 0.01), np.zeros((NW, 3)), np.zeros(3),
                  pr=0.0, pd=0.0, qrs=rng.uniform(0.13, 0.18), qt=0.0)
    th, m = rng.uniform(-180, 180), rng.uniform(0.9, 1.6)
    tp.a[R1] = frontal_vector(th, m, rng.normal(0, 0.9))
    tp.a[R2] = frontal_vector(th + rng.uniform(20, 60), m * rng.uniform(0.6, 1.0), rng.normal(0, 0.9))
    tp.c[R1], tp.sl[R1], tp.sr[R1] = 0.3 * tp.qrs, 0.12 * tp.qrs, 0.1 * tp.qrs
    tp.c[R2], tp.sl[R2], tp.sr[R2] = 0.62 * tp.qrs, 0.12 * tp.qrs, 0.12 * tp.qrs
    tp.a[T] = -(tp.a[R1] + tp.a[R2]) / np.linalg.norm(tp.a[R1] + tp.a[R2]) * rng.uniform(0.3, 0.6)
    tp.c[T], tp.sl[T], tp.sr[T] = tp.qrs + 0.16, 0.07, 0.05
    return tp


# ----------------------------------------------------------------------------------------------------------------
# The public entry point
# ----------------------------------------------------------------------------------------------------------------
def synthesize(rng: np.random.Generator, labels=None, fs: int = 500, seconds: float = 10.0, *,
               hr: float | None = None, noise: float = 1.0, extras=None, prevalence=None,
               lead_reversal: float = 0.0) -> tuple[np.ndarray, dict]:
    """One 12-lead record (float32 mV, [12, round(seconds*fs)], LEADS order) and its meta.

    labels: None (sampled with `prevalence`), 5-vector / {label: 0/1}, or tokens (see the module docstring).
    hr: requested mean ventricular rate (bpm); None draws one (NORM 52-98, SBRAD 40-58, STACH 102-145, AF 60-150).
    noise: scale of baseline wander, EMG and mains hum (0 = clean). extras: rhythm extras (PVC, PAC, SARRH, SBRAD,
    STACH);
    None samples them, () disables them. lead_reversal: probability of an LA/RA electrode swap.
    """
    n = int(round(seconds * fs))
    vec, subs, ex = _resolve(rng, labels, prevalence, extras)
    sset = set(subs)
    af, afl = "AFIB" in sset, "AFLT" in sset
    hr_given = hr is not None
    if hr is None:
        # sinus bradycardia < 60/min, sinus tachycardia > 100/min, normal 50(60)-100/min; AF ventricular response
        hr = (clamp(rng.normal(95, 20), 60, 150) if af else rng.uniform(40, 58) if "SBRAD" in ex
              else rng.uniform(102, 145) if "STACH" in ex else clamp(rng.normal(72, 11), 52, 98))
    elif not (af or afl):
        ex = [e for e in ex if e not in ("SBRAD", "STACH")] + (["SBRAD"] if hr < 60 else ["STACH"] if hr > 100 else [])
    hr = float(hr)
    P = P12.copy()
    # Chest-lead voltage: a per-record factor (chest wall, age, sex: women's precordial voltages run ~15 % lower,
    # Macfarlane & Lawrie normal limits) times per-electrode placement jitter. The mean brings R V5 / S V1 of
    # unlabelled records to the delineated real ones (bench.sim2real, real dev set: medians 1.0 / 0.7 mV;
    # Macfarlane: R V5 ~1.0-1.4 mV).
    male = bool(rng.random() < 0.52)  # PTB-XL: 52 % male
    chest = clamp(rng.normal(0.85 if male else 0.74, 0.12), 0.5, 1.15)
    P[6:] *= chest * np.clip(rng.normal(1, 0.08, 6), 0.8, 1.2)[:, None]

    # Rhythm first: flutter fixes the ventricular rate, which the QT then follows
    info: dict = {}
    fa = None
    if af:
        onsets = _af_onsets(rng, hr, seconds)
    elif afl:
        onsets, fa, fl = _afl(rng, hr if hr_given else None, seconds, n, fs, P)
        info.update(fl)
        inside = onsets[(onsets > 0) & (onsets < seconds)]
        hr = 60.0 / float(np.mean(np.diff(inside if len(inside) > 2 else onsets)))
    else:
        onsets = _sinus_onsets(rng, hr, seconds, "SARRH" in ex)

    tp = base_template(rng, hr, P)
    axis = None
    hyp = next((s for s in subs if SUBTYPE_LABEL[s] == "HYP"), None)
    for s in sorted((s for s in subs if SUBTYPE_LABEL[s] == "CD"), key=lambda s: s == "LAFB"):  # LAFB last: Q
        ax = apply_cd(rng, tp, s, P)
        axis = ax if ax is not None else axis
    if "RVH" in sset:
        axis = rng.uniform(105, 150)
        tp.a[R2] = tp.a[R2] + frontal_vector(0, 0, -1.2 * np.linalg.norm(tp.a[R2]))  # anterior RV forces
    # LVH is read by voltage (Sokolow-Lyon / Cornell) or by the Romhilt-Estes point score (Romhilt & Estes 1968: >= 5
    # points is definite LVH), which needs no voltage: left-atrial abnormality 3 + strain 3, or 3 + QRS >= 90 ms 1 +
    # intrinsicoid deflection >= 50 ms 1. Voltage criteria have 20-50 % sensitivity, so a real LVH label often sits
    # on modest voltages; we draw the point-score form in 40 % of LVH records in sinus rhythm.
    lvh_points = hyp in ("LVH", "LVH_strain") and not (af or afl) and rng.random() < 0.4
    if hyp in ("LVH", "LVH_strain"):  # LVH: more posterior and leftward forces
        tp.a[R2] = tp.a[R2] + frontal_vector(0, 0, 0.35 * np.linalg.norm(tp.a[R2]))
        axis = qrs_axis(tp) - rng.uniform(0, 20) if axis is None else axis
        if lvh_points and not any(SUBTYPE_LABEL[s] == "CD" for s in subs):
            tp.qrs = max(tp.qrs, rng.uniform(0.1, 0.115))  # QRS >= 90 ms and a late intrinsicoid deflection
            set_qrs(tp, tp.qrs)
    if axis is not None:
        set_axis(tp, axis)
    if lvh_points or hyp in ("LAE", "RAE"):
        apply_atrial(rng, tp, "RAE" if hyp == "RAE" else "LAE", P)
    mi = [s for s in subs if SUBTYPE_LABEL[s] == "MI"]
    for s in mi:
        if s.endswith("_old"):
            mi_qrs(rng, tp, {"A": "ant", "I": "inf", "L": "lat"}[s[0]], P)
    if "LNGQT" in sset:  # Long QT: QTc > 450 ms (men) / 460 ms (women); we draw 480-560 ms (Bazett)
        tp.qt = rng.uniform(0.48, 0.56) * np.sqrt(60.0 / hr)
    if "WPW" in sset or "CLBBB" in sset:
        tp.qt += 0.5 * (tp.qrs - 0.09)  # wide QRS prolongs QT by part of the extra QRS width
    place_p(tp)
    place_t(tp)
    if not sset & {"CLBBB", "WPW"}:
        # Normal ST elevation in V2-V3 (4th UDMI 2018: J-point elevation up to 0.2 mV in men >= 40 y, 0.25 mV < 40 y,
        # 0.15 mV in women is normal; healthy men ~0.1 mV). Conditions' ST changes are measured on top of it.
        st_shift(tp, P, lead_pattern(P, {"V2": 1, "V3": 1}, {"V1": .3, "V4": .3}), [LI["V2"], LI["V3"]],
                  rng.uniform(0.02, 0.15) if male else rng.uniform(0.0, 0.09))
    for s in mi:
        apply_mi(rng, tp, s, P)
    info.update(apply_hyp(rng, tp, hyp or "", P, voltage=not lvh_points))
    if hyp in ("LVH", "LVH_strain"):
        info["lvh_criterion"] = "romhilt_estes" if lvh_points else "voltage"
    terr_mi = {"A": "ant", "I": "inf", "L": "lat"}[mi[0][0]] if mi else None
    for s in subs:
        if s in ("NST", "STD", "TINV"):
            info.setdefault("territory", {})[s] = apply_sttc(rng, tp, s, P, terr_mi)
    for s in mi:
        info.setdefault("territory", {})[s] = {"A": "ant", "I": "inf", "L": "lat"}[s[0]]
    # Turning T away from one or two territories swells it in the opposite leads; keep T within what bodies show
    # (<= 0.6 mV limb, <= 1.0 mV chest; hyperacute T may reach 1.5 mV). Scaling keeps every T's sign.
    tv = P @ tp.a[T]
    cap = (1.5, 1.5) if any(s.endswith("_acute") for s in mi) else (0.6, 1.0)
    tp.a[T] *= min(1.0, cap[0] / max(tv[:6].max(), 1e-6), cap[1] / max(tv[6:].max(), 1e-6))

    if af or afl:
        tp.a[[P1, P2]] = 0
    B_all = onsets
    rr_prev = np.diff(B_all, prepend=B_all[0] - 60.0 / hr)
    pvc = np.zeros(len(B_all), bool)
    if "PVC" in ex:
        cand = np.flatnonzero((B_all > 0.5) & (B_all < seconds - 0.8))
        if len(cand):
            B_all = B_all.copy()
            # forms: 20 % couplet or ventricular run, 25 % bigeminy/trigeminy, 55 % 1-3 isolated PVCs. The share of runs
            # is a robustness choice, not a prevalence (CinC-2021: ~3,100 PVC records vs 109 paroxysmal VT): a model
            # must see wide, fast, irregular ventricular beats that are neither a conduction disturbance nor AF
            form = rng.random()
            info["pvc_form"] = "run" if form < 0.2 else "bigeminy" if form < 0.45 else "isolated"
            if form < 0.2:  # a couplet or a run of non-sustained VT: >= 3 ventricular beats at > 100/min, < 30 s
                # (textbook definition); the run's cycle is 0.3-0.5 s (120-200/min), the sinus beats it hides vanish
                b, k = int(rng.choice(cand)), int(rng.choice([2, 3, 4, 5, 6, 8], p=[.4, .2, .15, .1, .1, .05]))
                run = B_all[b] - rr_prev[b] * (1 - rng.uniform(0.45, 0.7)) + rng.uniform(0.3, 0.5) * np.arange(k)
                hid = (B_all > run[0] - 0.05) & (B_all < run[-1] + 0.35)
                B_all = np.concatenate([B_all[~hid], run])
                pvc = np.concatenate([np.zeros((~hid).sum(), bool), np.ones(k, bool)])
                order = np.argsort(B_all, kind="stable")
                B_all, pvc = B_all[order], pvc[order]
                rr_prev = np.diff(B_all, prepend=B_all[0] - 60.0 / hr)
            else:
                if form < 0.45:  # ventricular bigeminy or trigeminy (meta 'bigeminy' covers both)
                    sel = cand[rng.integers(3)::int(rng.choice([2, 3]))]
                else:
                    sel = np.sort(rng.choice(cand, size=min(len(cand), int(rng.integers(1, 4))), replace=False))
                    sel = sel[np.concatenate([[True], np.diff(sel) > 1])]
                pvc[sel] = True
                # coupling interval 45-70 % of RR; the next beat keeps its time (full compensatory pause)
                B_all[sel] -= rr_prev[sel] * (1 - rng.uniform(0.45, 0.7))
    if "PAC" in ex:  # 1-2 premature atrial beats, 15-35 % early, normal QRS; the sinus node resets (no compensation)
        cand = np.flatnonzero((B_all > 0.5) & (B_all < seconds - 0.8) & ~pvc)
        if len(cand):
            B_all = B_all.copy()
            for b in np.sort(rng.choice(cand, size=min(len(cand), int(rng.integers(1, 3))), replace=False)):
                B_all[b:] -= rr_prev[b] * rng.uniform(0.15, 0.35)
    keep = (B_all > -POST) & (B_all < seconds + PRE)
    onsets, pvc = B_all[keep], pvc[keep]
    rr_b = np.diff(onsets, prepend=onsets[0] - 60.0 / hr)
    qtc = tp.qt / np.sqrt(60.0 / hr)
    qt_b = qtc * np.sqrt(np.clip(0.4 * rr_b + 0.6 * 60.0 / hr, 0.3, 2.0))  # QT adapts partly to the last RR
    pvc_tp = _pvc_template(rng, P) if pvc.any() else None
    # breathing moves the heart: depolarisation amplitudes swing by 0-8 % at the respiratory rate
    amp_b = 1 + rng.uniform(0, 0.08) * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * onsets + rng.uniform(0, 2 * np.pi))
    ub = _render(tp, onsets, qt_b, amp_b, pvc, pvc_tp, fs, n)
    if af:
        fw, finfo = _fwaves(rng, n, fs, P)
        ub = ub + fw
        info.update(finfo)
    elif afl:
        ub = ub + fa
    Pi = np.concatenate([P[:2], P[6:]]).astype(np.float32)  # the 8 independent leads
    sig8 = Pi @ ub

    if noise > 0:  # added to the independent leads, so the limb-lead identities still hold exactly
        _add_noise(rng, sig8, fs, noise)
    I, II = sig8[0], sig8[1]
    reversed_ = bool(lead_reversal > 0 and rng.random() < lead_reversal)
    if reversed_:  # LA/RA electrode swap: I inverted, II and III swap, aVR and aVL swap, aVF unchanged
        I, II = -I, II - I
    sig = np.empty((12, n), np.float32)
    sig[0], sig[1], sig[2] = I, II, II - I  # Einthoven
    sig[3], sig[4], sig[5] = -(I + II) / 2, I - II / 2, II - I / 2  # Goldberger
    sig[6:] = sig8[2:]

    inside = onsets[(onsets >= 0) & (onsets < seconds)]
    rr_in = np.diff(inside)
    hr_real = 60.0 / float(np.mean(rr_in)) if len(inside) > 2 else hr
    meta = {
        "labels": {k: int(v) for k, v in zip(LABELS, vec)}, "subtypes": subs, "extras": ex,
        "fs": int(fs), "seconds": float(seconds), "leads": list(LEADS),
        "hr": round(hr_real, 1), "pr_ms": None if (af or afl) else round(1000 * tp.pr, 1),
        "qrs_ms": round(1000 * float(tp.qrs), 1), "qt_ms": round(1000 * float(tp.qt), 1),
        "qtc_ms": round(1000 * float(tp.qt) / np.sqrt(60.0 / hr), 1), "axis_deg": round(qrs_axis(tp), 1),
        "rr_cv": round(float(rr_in.std() / rr_in.mean()), 3) if len(inside) > 2 else 0.0,
        "n_pvc": int(pvc[(onsets >= 0) & (onsets < seconds)].sum()), "sex": "M" if male else "F",
        "lead_reversal": reversed_, **info,
    }
    return sig, meta


def _add_noise(rng, sig8: np.ndarray, fs: int, noise: float) -> None:
    """Baseline wander, EMG and mains hum on the 8 independent leads (in place; float32 throughout, for speed)."""
    n = sig8.shape[1]
    r = rng.random(4)
    tt = np.arange(n, dtype=np.float32) / np.float32(fs)
    if r[0] < 0.75:  # baseline wander: respiration 0.15-0.4 Hz, slow drift 0.02-0.1 Hz, electrode motion
        f = np.array([rng.uniform(0.15, 0.4), rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.9)], np.float32)
        basis = np.sin((2 * np.pi * f[:, None]).astype(np.float32) * tt[None, :]
                       + rng.uniform(0, 2 * np.pi, (3, 1)).astype(np.float32))
        # levels (mV) put lead II's < 0.7 Hz RMS near the real records' (bench.sim2real, real dev set: median ~25 uV)
        lev = np.array([rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.1), rng.uniform(0.005, 0.03)])
        sig8 += (rng.standard_normal((8, 3)) * lev * noise).astype(np.float32) @ basis
    if r[1] < 0.6:  # EMG: differenced white noise (high-pass, like muscle artefact), 2-25 uV RMS, log-uniform (real
        # records are mostly quiet and device-filtered: bench.sim2real, real dev set: lead II > 40 Hz median ~6 uV)
        e = np.frombuffer(rng.bytes(8 * (n + 1)), np.int8).reshape(8, n + 1).astype(np.float32)
        lev = np.exp(rng.uniform(np.log(0.002), np.log(0.025))) * noise / 104.5 * rng.uniform(0.5, 1.5, (8, 1))
        sig8 += (e[:, 1:] - e[:, :-1]) * lev.astype(np.float32)
    if r[2] < 0.5:  # powerline hum, 50 or 60 Hz, 2-30 uV log-uniform (bench.sim2real, real dev set: II median ~5 uV)
        hum = np.sin(np.float32(2 * np.pi * (50 if r[3] < 0.6 else 60)) * tt + np.float32(rng.uniform(0, 7)))
        lev = np.exp(rng.uniform(np.log(0.002), np.log(0.03))) * rng.uniform(0.5, 1.5, 8)
        sig8 += np.outer(lev * noise, hum).astype(np.float32)


def record_rng(seed: int, index: int) -> np.random.Generator:
    """Record `index` of a set seeded `seed`: independent of how many records are generated."""
    return np.random.default_rng([int(seed), int(index)])


def synth_record(seed: int, index: int, **kw) -> tuple[np.ndarray, dict]:
    sig, meta = synthesize(record_rng(seed, index), **kw)
    meta.update(seed=int(seed), index=int(index))
    return sig, meta


# ----------------------------------------------------------------------------------------------------------------
# Plotting (for eyeballing; not a hot path)
# ----------------------------------------------------------------------------------------------------------------
def plot_record(sig: np.ndarray, meta: dict, path: str | Path, seconds: float | None = None) -> None:
    """12 leads stacked on ECG paper (25 mm/s, 10 mm/mV, 1 mm minor grid), title with labels and intervals;
    `seconds` crops to the first seconds for a closer look."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from .utils import atomic_path
    fs = meta["fs"]
    if seconds:
        sig = sig[:, :int(seconds * fs)]
    n = sig.shape[1]
    w_mm, row_mm = n / fs * 25, 30
    h_mm = row_mm * 12 + 10
    fig = plt.figure(figsize=(max(w_mm, 150) / 25.4 * 0.7, h_mm / 25.4 * 0.7), dpi=110 if seconds is None else 160)
    ax = fig.add_axes([0, 0, 1, 1 - 8 / h_mm])
    ax.set_xlim(0, w_mm)
    ax.set_ylim(-row_mm * 12, row_mm / 2)
    for step, lw, col in ((1, 0.3, "#f6c8c8"), (5, 0.7, "#e88e8e")):
        xs = np.arange(0, w_mm + 1e-6, step)
        ys = np.arange(-row_mm * 12, row_mm / 2 + 1e-6, step)
        segs = [[(x, ys[0]), (x, ys[-1])] for x in xs] + [[(xs[0], y), (xs[-1], y)] for y in ys]
        ax.add_collection(LineCollection(segs, linewidths=lw, colors=col, zorder=0))
    x = np.arange(n) / fs * 25
    for i, name in enumerate(meta.get("leads", LEADS)):
        y0 = -row_mm * i - row_mm / 6
        ax.plot(x, y0 + 10 * sig[i], color="k", lw=0.6, zorder=2)
        ax.text(1, y0 + 6, name, fontsize=8, zorder=3)
    ax.axis("off")
    lab = "+".join(k for k, v in meta["labels"].items() if v) or "NORM"
    fig.suptitle(f"{meta.get('record', '')}  {lab}  [{';'.join(meta['subtypes'] + meta['extras'])}]  "
                 f"HR {meta['hr']}  PR {meta['pr_ms']}  QRS {meta['qrs_ms']}  QT {meta['qt_ms']}  "
                 f"axis {meta['axis_deg']}", fontsize=9, y=0.999, va="top")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# CLI: WFDB records + labels.csv, parallel, resumable
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SynthConfig:
    """Synthesise labelled 12-lead ECG records as WFDB (format 16, gain 1000/mV, like PTB-XL) plus labels.csv."""
    out: Path | None = None  # output folder (default: <input>/ecg-synth-signals)
    n: int = 100  # number of records rec_000000 ... ; rerun with a larger n to extend a set
    seed: int = 0  # record i is drawn from np.random.default_rng([seed, i])
    prevalence: str = ""  # label prevalences, e.g. MI=0.25,AF=0.07 (unnamed labels keep the BHF defaults)
    fs: int = 500  # sampling rate, Hz
    seconds: float = 10.0  # record length, s
    noise: float = 1.0  # scale of baseline wander, EMG and mains hum (0 = clean)
    lead_reversal: float = 0.0  # probability of an LA/RA electrode swap per record
    workers: int = 0  # processes (0 = one per core, 1 = inline)
    plot: int = 0  # also draw the first K records as PNG in <out>/plots/


CSV_PARAMS = ("hr", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "axis_deg")
_SET_KEYS = ("seed", "prevalence", "fs", "seconds", "noise", "lead_reversal")  # what makes a set; n may grow


def _gen_kw(cfg: SynthConfig) -> dict:
    return dict(fs=cfg.fs, seconds=cfg.seconds, noise=cfg.noise, prevalence=parse_prevalence(cfg.prevalence),
                lead_reversal=cfg.lead_reversal)


def _make_record(i: int, out: Path, seed: int, kw: dict, plot: bool) -> dict:
    name = f"rec_{i:06d}"
    sig, meta = synth_record(seed, i, **kw)  # regenerated even when finished: cheap, and rebuilds the labels row
    meta["record"] = name
    if not ((out / f"{name}.hea").exists() and (out / f"{name}.dat").exists()):
        lab = " ".join(f"{k}={v}" for k, v in meta["labels"].items())
        write_wfdb(out, name, sig, kw["fs"], [f"labels: {lab}", f"subtypes: {';'.join(meta['subtypes']) or 'NORM'}",
                                              f"seed: {seed} index: {i}"])
    if plot and not (out / "plots" / f"{name}.png").exists():
        plot_record(sig, meta, out / "plots" / f"{name}.png")
    return {"record": name, **meta["labels"], "subtype": ";".join(meta["subtypes"]) or "NORM",
            "extras": ";".join(meta["extras"]), **{k: meta[k] for k in CSV_PARAMS}}


def main(argv: list[str] | None = None) -> Path:
    import pandas as pd
    cfg = parse_args(SynthConfig, argv)
    out = Path(cfg.out) if cfg.out else paths().input / "ecg-synth-signals"
    if cfg.n < 0 or cfg.fs <= 0 or cfg.seconds <= 0:
        raise SystemExit("--n must be >= 0 and --fs, --seconds > 0")
    kw = _gen_kw(cfg)  # validates --prevalence
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in config_dict(cfg).items() if k in _SET_KEYS}
    settings["prevalence"] = kw["prevalence"]
    sfile = out / "synth.json"
    if sfile.exists():
        old = json.loads(sfile.read_text())
        if old != settings:
            raise SystemExit(f"{out} holds records made with other settings ({sfile}: {old}); use the same "
                             f"--seed/--prevalence/--fs/--seconds/--noise/--lead_reversal or a new --out")
    else:
        write_json(sfile, settings)
    for stale in out.glob(".tmp_rec_*"):  # left by a killed run; its record was never renamed into place
        shutil.rmtree(stale, ignore_errors=True)
    import wfdb  # noqa: F401  (imported once here, so forked workers do not each pay for it)
    job = functools.partial(_make_record, out=out, seed=cfg.seed, kw=kw, plot=False)
    rows = sorted(parallel_map(job, range(cfg.n), workers=cfg.workers, desc="synth", chunksize=16),
                  key=lambda r: r["record"])
    df = pd.DataFrame(rows, columns=["record", *LABELS, "subtype", "extras", *CSV_PARAMS])
    write_csv(out / "labels.csv", df)
    for i in range(min(cfg.plot, cfg.n)):
        _make_record(i, out, cfg.seed, kw, plot=True)
    prev = ", ".join(f"{k} {df[k].mean():.3f}" for k in LABELS) if len(df) else "-"
    print(f"synth: {len(df)} records in {out} (labels.csv; prevalence {prev})"
          + (f"; plots in {out / 'plots'}" if cfg.plot else ""))
    return out


if __name__ == "__main__":
    main()
