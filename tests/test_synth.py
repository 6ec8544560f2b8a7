"""Synthesiser behaviour, measured on the generated signals by code that does not look at the synthesiser's parameters.

neurokit2 (a test-only dependency) finds R peaks and, with its DWT delineator, P and QRS onsets for the PR interval.
Its QRS *offsets* are unreliable on wide, slurred complexes (NaN or P-wave onsets on LBBB), so QRS boundaries come
from the classic global method here: the spatial velocity of the 8 independent leads must stay below 5 % of its peak
for 20 ms. Voltages and ST levels are then read off the signal as a cardiologist would (PR-segment baseline, J+60 ms).
"""
import json
import warnings

import numpy as np
import pytest

from src.config import LABELS, LEADS
from src import synth as S

nk = pytest.importorskip("neurokit2")
FS = 500
IND = [0, 1, 6, 7, 8, 9, 10, 11]  # I, II, V1..V6: the leads the other four are computed from
L = {name: i for i, name in enumerate(LEADS)}
CONTIGUOUS = [("I", "aVL"), ("II", "III"), ("II", "aVF"), ("III", "aVF"), ("V1", "V2"), ("V2", "V3"), ("V3", "V4"),
              ("V4", "V5"), ("V5", "V6"), ("V6", "I")]


def make(labels, seed=0, noise=0.0, hr=None, extras=(), **kw):
    return S.synthesize(np.random.default_rng(seed), labels=labels, noise=noise, hr=hr, extras=extras, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Independent measurements
# ---------------------------------------------------------------------------------------------------------------
def rpeaks(sig, lead=None):
    """neurokit2 R peaks on `lead`, or on the lead with the steepest QRS (flipped if its QRS points down)."""
    if lead is not None:
        x = sig[L[lead]]
    else:
        x = sig[IND][np.argmax(np.abs(np.diff(sig[IND], axis=1)).max(1))]
        x = x if x.max() - np.median(x) >= np.median(x) - x.min() else -x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=FS), sampling_rate=FS)
    return np.asarray(info["ECG_R_Peaks"])


def qrs_bounds(sig, r, frac=0.05, quiet_ms=20):
    v = np.sqrt((np.diff(sig[IND], axis=1) ** 2).sum(0))
    q = int(quiet_ms * FS / 1000)
    on, off = [], []
    for p in r:
        a, b = p - int(0.2 * FS), p + int(0.2 * FS)
        if a < int(0.1 * FS) or b + int(0.1 * FS) >= len(v):
            continue
        seg = v[a:b]
        c = int(np.argmax(seg[int(0.12 * FS):int(0.28 * FS)])) + int(0.12 * FS)
        thr = frac * seg.max()
        i, j = c, c
        while i > q and not (seg[i - q:i] < thr).all():
            i -= 1
        while j < len(seg) - q and not (seg[j:j + q] < thr).all():
            j += 1
        on.append(a + i)
        off.append(a + j)
    return np.array(on), np.array(off)


def beats(sig):
    on, off = qrs_bounds(sig, rpeaks(sig))
    assert len(on) >= 4, "too few beats found"
    base = np.stack([sig[:, a - int(0.02 * FS):a - int(0.004 * FS)].mean(1) for a in on])  # PR segment
    return on, off, base


def qrs_ms(sig):
    on, off, _ = beats(sig)
    return float(np.median(off - on)) * 1000 / FS


def st_mv(sig, after_j_ms=60):
    on, off, base = beats(sig)
    k = int(after_j_ms * FS / 1000)
    return np.median(np.stack([sig[:, b + k] for b in off]) - base, 0)


def voltages(sig):
    """Median over beats of the most positive (R) and most negative (S) QRS deflection per lead, from baseline."""
    on, off, base = beats(sig)
    r = np.median([sig[:, a:b + 1].max(1) - bl for a, b, bl in zip(on, off, base)], 0)
    s = np.median([bl - sig[:, a:b + 1].min(1) for a, b, bl in zip(on, off, base)], 0)
    return r, s


def axis_deg(sig):
    """Frontal QRS axis from the net QRS areas of I and aVF (hexaxial: aVF = sqrt(3)/2 of the vertical component)."""
    on, off, base = beats(sig)
    net = np.median([(sig[:, a:b + 1] - bl[:, None]).sum(1) for a, b, bl in zip(on, off, base)], 0)
    return float(np.degrees(np.arctan2(net[L["aVF"]] * 2 / np.sqrt(3), net[L["I"]])))


def t_amp(sig):
    """Median over beats of the T-wave peak (largest |deflection| 150-400 ms after QRS offset) from baseline, per
    lead."""
    on, off, base = beats(sig)
    seg = [sig[:, b + int(0.15 * FS):b + int(0.4 * FS)] - bl[:, None] for b, bl in zip(off, base)
           if b + int(0.4 * FS) < sig.shape[1]]
    idx = [np.abs(s).argmax(1) for s in seg]
    return np.median([s[np.arange(12), i] for s, i in zip(seg, idx)], 0)


def n_contiguous(st, pred):
    return sum(pred(st[L[a]]) and pred(st[L[b]]) for a, b in CONTIGUOUS)


def pr_ms(sig):
    x = nk.ecg_clean(sig[L["II"]], sampling_rate=FS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, w = nk.ecg_delineate(x, rpeaks(sig, "II"), sampling_rate=FS, method="dwt")
    return float(np.nanmedian(np.array(w["ECG_R_Onsets"], float) - np.array(w["ECG_P_Onsets"], float))) * 1000 / FS


def p_wave_found(sig):
    """A P wave is there if the 250..40 ms before each QRS holds the same >= 50 uV bump beat after beat
    (ensemble average in II, V1 and aVF; consistency = mean beat-to-beat correlation)."""
    on, _, _ = beats(sig)
    on = on[on > int(0.3 * FS)]
    found = False
    for lead in ("II", "V1", "aVF"):
        w = np.stack([sig[L[lead], a - int(0.25 * FS):a - int(0.04 * FS)] for a in on])
        w = w - w.mean(1, keepdims=True)
        avg = w.mean(0)
        c = np.corrcoef(w)
        consistency = (c.sum() - len(w)) / (len(w) * (len(w) - 1))
        found |= bool(np.ptp(avg) >= 0.05 and consistency > 0.8)
    return found


# ---------------------------------------------------------------------------------------------------------------
# Interface and invariants
# ---------------------------------------------------------------------------------------------------------------
def test_shape_dtype_and_meta():
    sig, meta = S.synthesize(np.random.default_rng(1))
    assert sig.shape == (12, 5000) and sig.dtype == np.float32 and np.isfinite(sig).all()
    for k in ("labels", "subtypes", "fs", "seconds", "hr", "pr_ms", "qrs_ms", "qt_ms", "leads"):
        assert k in meta
    assert list(meta["labels"]) == list(LABELS) and meta["leads"] == list(LEADS)
    json.dumps(meta)  # serialisable
    sig, meta = S.synthesize(np.random.default_rng(1), fs=250, seconds=4.0)
    assert sig.shape == (12, 1000) and meta["fs"] == 250


@pytest.mark.parametrize("reversal", [0.0, 1.0])
def test_einthoven_goldberger(reversal):
    for seed in range(5):
        sig, meta = S.synthesize(np.random.default_rng(seed), lead_reversal=reversal)
        assert meta["lead_reversal"] == bool(reversal)
        I, II, III, aVR, aVL, aVF = sig[:6]
        assert np.array_equal(III, II - I)
        assert np.abs(aVR + aVL + aVF).max() < 1e-6 * max(1.0, np.abs(sig).max())
        np.testing.assert_allclose(aVF, II - I / 2, atol=1e-6)


def test_same_seed_same_bytes_and_independent_of_n():
    a, ma = S.synth_record(7, 3)
    b, mb = S.synth_record(7, 3)
    assert a.tobytes() == b.tobytes() and ma == mb
    c, _ = S.synth_record(7, 4)
    assert a.tobytes() != c.tobytes()
    assert S.record_rng(7, 3).random() == np.random.default_rng([7, 3]).random()


def test_label_forms_and_errors():
    _, m = make(["IMI_old", "AFIB"])
    assert m["labels"] == {"MI": 1, "AF": 1, "HYP": 0, "CD": 0, "STTC": 0} and m["pr_ms"] is None
    _, m = make({"CD": 1, "HYP": 1})
    assert m["labels"]["CD"] == m["labels"]["HYP"] == 1 and m["labels"]["MI"] == 0
    assert {S.SUBTYPE_LABEL[s] for s in m["subtypes"]} == {"CD", "HYP"}
    _, m = make([0, 0, 0, 0, 1])
    assert m["labels"]["STTC"] == 1 and sum(m["labels"].values()) == 1
    _, m = make(["NORM"])
    assert sum(m["labels"].values()) == 0 and m["subtypes"] == []
    _, m = make(["AVB1", "PVC"])
    assert m["subtypes"] == ["1AVB"] and m["extras"] == ["PVC"]
    with pytest.raises(ValueError, match="unknown"):
        make(["XYZ"])
    with pytest.raises(ValueError, match="cannot be combined"):
        make(["AFIB", "1AVB"])
    with pytest.raises(ValueError):
        S.parse_prevalence("MI=2")


def test_sampler_prevalence():
    rng = np.random.default_rng(0)
    for prev in (None, {"MI": 0.5, "AF": 0.3, "HYP": 0.05, "CD": 0.4, "STTC": 0.1}):
        draws = [S.sample_labels(rng, prev) for _ in range(5000)]
        vec = np.array([d[0] for d in draws])
        want = S.parse_prevalence(prev)
        for i, lab in enumerate(LABELS):
            assert abs(vec[:, i].mean() - want[lab]) < 0.03, (lab, vec[:, i].mean(), want[lab])
        for v, subs in draws[:500]:  # every positive label has a subtype of its own, and only those
            assert {S.SUBTYPE_LABEL[s] for s in subs} == {lab for lab, x in zip(LABELS, v) if x}
            assert not any(S._conflicts({a}, b) for a in subs for b in subs if a != b)


# ---------------------------------------------------------------------------------------------------------------
# Physiology, measured
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hr", [45, 70, 125])
def test_heart_rate(hr):
    for seed in range(2):
        sig, meta = make(["NORM"], seed=seed, hr=hr, noise=1.0)  # with baseline wander, EMG and hum
        r = rpeaks(sig, "II")
        assert abs(60 * FS / np.mean(np.diff(r)) - hr) <= 5


def test_first_degree_av_block_pr():
    for seed in range(3):
        assert pr_ms(make(["1AVB"], seed=seed, hr=70)[0]) > 200
        assert pr_ms(make(["NORM"], seed=seed, hr=70)[0]) < 200


@pytest.mark.parametrize("sub", ["CLBBB", "CRBBB"])
def test_bundle_branch_block_qrs(sub):
    for seed in range(4):
        assert qrs_ms(make([sub], seed=seed)[0]) >= 120
    assert qrs_ms(make(["NORM"], seed=0)[0]) < 120


def test_af_irregular_without_p_waves():
    for seed in range(4):
        sig, _ = make(["AFIB"], seed=seed)
        rr = np.diff(rpeaks(sig))
        assert rr.std() / rr.mean() > 0.1
        assert not p_wave_found(sig)
        sig, _ = make(["NORM"], seed=seed)
        rr = np.diff(rpeaks(sig))
        assert rr.std() / rr.mean() < 0.1
        assert p_wave_found(sig)


def p_wave(sig, lead, kind):
    """Median over beats of the P wave's trough ('min') or peak ('max') in `lead`, 300..0 ms before QRS onset, against
    the T-P baseline just before that window."""
    on, _, _ = beats(sig)
    vals = []
    for a in on:
        x = sig[L[lead], a - int(0.3 * FS):a] - sig[L[lead], a - int(0.32 * FS):a - int(0.3 * FS)].mean()
        vals.append(x.min() if kind == "min" else x.max())
    return float(np.median(vals))


def test_lvh_by_voltage_or_romhilt_estes():
    """LVH: Sokolow-Lyon >= 3.5 mV or Cornell >= 2.8 mV, or, for the Romhilt-Estes form, left-atrial abnormality (a
    terminal negative P in V1 >= 0.1 mV) and QRS >= 90 ms; an unlabelled record meets neither voltage criterion."""
    kinds = set()
    for seed in range(6):
        sig, meta = make(["LVH"], seed=seed)
        r, s = voltages(sig)
        sokolow, cornell = s[L["V1"]] + max(r[L["V5"]], r[L["V6"]]), r[L["aVL"]] + s[L["V3"]]
        kinds.add(meta["lvh_criterion"])
        if meta["lvh_criterion"] == "voltage":
            assert sokolow >= 3.5 or cornell >= 2.8, (seed, sokolow, cornell)
        else:
            assert p_wave(sig, "V1", "min") <= -0.1 and qrs_ms(sig) >= 90, (seed, p_wave(sig, "V1", "min"))
        r, s = voltages(make(["NORM"], seed=seed)[0])
        assert s[L["V1"]] + max(r[L["V5"]], r[L["V6"]]) < 3.5 and r[L["aVL"]] + s[L["V3"]] < 2.8
    assert kinds == {"voltage", "romhilt_estes"}


def test_atrial_abnormality_p_waves():
    """Left: terminal negative P in V1 deeper than the same patients' normal P (median over records <= -0.12 mV);
    right (P pulmonale): P >= 0.25 mV in II (median over records)."""
    lae = [p_wave(make(["LAE"], seed=seed)[0], "V1", "min") for seed in range(5)]
    norm = [p_wave(make(["NORM"], seed=seed)[0], "V1", "min") for seed in range(5)]
    assert np.median(lae) <= -0.12 and np.median(lae) < np.median(norm) - 0.04, (lae, norm)
    rae = [p_wave(make(["RAE"], seed=seed)[0], "II", "max") for seed in range(5)]
    assert np.median(rae) >= 0.25 and np.median([p_wave(make(["NORM"], seed=s)[0], "II", "max")
                                                  for s in range(5)]) < 0.2, rae


def test_rvh_and_lafb():
    for seed in range(3):
        sig, _ = make(["RVH"], seed=seed)
        r, s = voltages(sig)
        assert r[L["V1"]] >= 0.7 and r[L["V1"]] >= s[L["V1"]] and axis_deg(sig) > 100
        assert -90 <= axis_deg(make(["LAFB"], seed=seed)[0]) <= -45
        assert -30 <= axis_deg(make(["NORM"], seed=seed)[0]) <= 90


@pytest.mark.parametrize("sub,leads,recip", [("AMI_acute", ["V1", "V2", "V3", "V4"], ["III", "aVF"]),
                                             ("IMI_acute", ["II", "III", "aVF"], ["aVL"]),
                                             ("LMI_acute", ["I", "aVL", "V5", "V6"], ["III"])])
def test_stemi_st_elevation_with_reciprocal_depression(sub, leads, recip):
    for seed in range(3):
        st = st_mv(make([sub], seed=seed)[0])
        assert sum(st[L[k]] >= 0.1 for k in leads) >= 2, (seed, st.round(2))
        assert all(st[L[k]] < 0 for k in recip), (seed, st.round(2))


def test_sttc_st_depression_and_normal_st():
    for seed in range(4):
        sig, meta = make(["STD"], seed=seed)
        st = st_mv(sig)
        assert n_contiguous(st, lambda v: v <= -0.05) >= 1, (seed, meta["territory"], st.round(2))
        st = st_mv(make(["NORM"], seed=seed)[0])
        assert n_contiguous(st, lambda v: v <= -0.05) == 0, st.round(2)


def test_normal_st_within_udmi_limits_and_lifted_in_v2_v3():
    """4th UDMI: normal J-point/ST elevation up to 0.25 mV in V2-V3 (men < 40 y), < 0.1 mV elsewhere; the synthesiser
    draws a normal V2-V3 lift (real unlabelled records carry one), so its median over records is > 0."""
    v23 = []
    for seed in range(8):
        st = st_mv(make(["NORM"], seed=seed)[0])
        others = [k for k in LEADS if k not in ("V2", "V3")]
        assert max(st[L["V2"]], st[L["V3"]]) < 0.25 and max(st[L[k]] for k in others) < 0.1, st.round(2)
        v23.append(max(st[L["V2"]], st[L["V3"]]))
    assert np.median(v23) >= 0.03, np.round(v23, 3)


def test_nonspecific_st_t_flattens_t_without_ischaemic_depression():
    """NST: a flat or low T (<= 0.05 mV) in >= 2 leads where the same patient's T was upright, and no contiguous
    ST depression reaching the 0.05 mV ischaemic threshold."""
    for seed in range(4):
        sig, meta = make(["NST"], seed=seed)
        base, _ = make(["NORM"], seed=seed)
        t_nst, t_norm = t_amp(sig), t_amp(base)
        flat = [k for k in LEADS if t_norm[L[k]] > 0.1 and t_nst[L[k]] <= 0.06]
        assert len(flat) >= 2, (seed, meta["territory"], t_nst.round(2), t_norm.round(2))
        assert n_contiguous(st_mv(sig), lambda v: v <= -0.06) == 0


def test_ivcd_widens_qrs_without_bbb():
    for seed in range(3):
        q = qrs_ms(make(["IVCD"], seed=seed)[0])
        assert 105 <= q <= 145, (seed, q)


def test_pac_and_sinus_arrhythmia_make_rr_irregular_but_not_af():
    """A PAC comes >= 12 % early (one short RR, no compensatory pause); marked sinus arrhythmia gives RR CV > 4 %;
    both keep P waves, unlike AF."""
    for seed in range(3):
        rr = np.diff(rpeaks(make(["NORM"], seed=seed, extras=("PAC",))[0]))
        assert rr.min() <= 0.88 * np.median(rr), (seed, rr)
        sig = make(["NORM"], seed=seed, extras=("SARRH",))[0]
        rr = np.diff(rpeaks(sig))
        assert rr.std() / rr.mean() > 0.04 and p_wave_found(sig), (seed, rr)


def test_ventricular_runs_and_bigeminy():
    """A couplet or a run of non-sustained VT: ventricular beats <= 0.5 s apart (>= 120/min) amid sinus RR > 0.8 s;
    bigeminy or trigeminy: short coupled beats among >= 2 long RR intervals."""
    forms = {}
    for seed in range(40):
        sig, meta = make(["NORM"], seed=seed, hr=65, extras=("PVC",))
        if meta["pvc_form"] not in forms:
            forms[meta["pvc_form"]] = sig
        if len(forms) == 3:
            break
    rr = np.diff(rpeaks(forms["run"])) / FS
    assert (rr <= 0.5).sum() >= 1 and rr.max() > 0.8, rr.round(2)  # fast ventricular beats, sinus at 65/min around
    rr = np.diff(rpeaks(forms["bigeminy"])) / FS
    assert rr.min() < 0.75 * np.median(rr) and (rr > 0.85).sum() >= 2, rr.round(2)


def test_old_mi_pathological_q():
    """>= 2 contiguous inferior leads with Q >= 40 ms or Q >= 25 % of R (a QS complex counts)."""
    for seed in range(3):
        sig, _ = make(["IMI_old"], seed=seed)
        on, off, base = beats(sig)
        hits = 0
        for lead in ("II", "III", "aVF"):
            dur, depth, height = [], [], []
            for a, b, bl in zip(on, off, base):
                x = sig[L[lead], a:b + 1] - bl[L[lead]]
                pos = np.flatnonzero(x > 0.0)
                end = pos[0] if len(pos) else len(x)
                dur.append(end * 1000 / FS if x[:3].mean() < 0 else 0)
                depth.append(-x[:end].min() if end else 0)
                height.append(max(x.max(), 0))
            d, q, r = np.median(dur), np.median(depth), np.median(height)
            hits += (d >= 40 or q >= 0.25 * r) and q >= 0.05
        assert hits >= 2


# ---------------------------------------------------------------------------------------------------------------
# CLI: WFDB round trip, labels, resume
# ---------------------------------------------------------------------------------------------------------------
def test_cli_wfdb_round_trip_labels_and_resume(tmp_path):
    import pandas as pd
    import wfdb
    out = tmp_path / "sig"
    S.main(["--out", str(out), "--n", "3", "--seed", "5", "--workers", "1", "--plot", "1"])
    df = pd.read_csv(out / "labels.csv")
    assert list(df.columns[:6]) == ["record", *LABELS] and len(df) == 3
    assert (out / "plots" / "rec_000000.png").stat().st_size > 10_000
    for i in range(3):
        sig, meta = S.synth_record(5, i)
        rec = wfdb.rdrecord(str(out / f"rec_{i:06d}"))
        assert rec.fs == 500 and rec.sig_name == list(LEADS) and rec.units == ["mV"] * 12
        assert rec.fmt == ["16"] * 12 and rec.adc_gain == [1000.0] * 12 and rec.baseline == [0] * 12
        assert np.abs(rec.p_signal.T - sig).max() <= 0.0005 + 1e-6  # 1 uV quantisation
        row = df.iloc[i]
        assert [int(row[k]) for k in LABELS] == [meta["labels"][k] for k in LABELS]
        assert row["hr"] == pytest.approx(meta["hr"])
    # resume: finished records are not rewritten, the set can grow, record i does not depend on n
    stamp = (out / "rec_000001.dat").stat().st_mtime_ns
    data1 = (out / "rec_000002.dat").read_bytes()
    S.main(["--out", str(out), "--n", "4", "--seed", "5", "--workers", "1"])
    assert (out / "rec_000001.dat").stat().st_mtime_ns == stamp
    assert len(pd.read_csv(out / "labels.csv")) == 4
    other = tmp_path / "again"
    S.main(["--out", str(other), "--n", "3", "--seed", "5", "--workers", "1"])
    assert (other / "rec_000002.dat").read_bytes() == data1
    assert (other / "rec_000002.hea").read_bytes() == (out / "rec_000002.hea").read_bytes()
    with pytest.raises(SystemExit, match="other settings"):
        S.main(["--out", str(out), "--n", "4", "--seed", "6", "--workers", "1"])
    with pytest.raises(SystemExit, match="unknown option"):
        S.main(["--out", str(out), "--nn", "4"])
