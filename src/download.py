"""Fetch the real datasets into input/<name>/, where src/sources.py looks for them.

    python -m src.download bhf        # the BHF DSC ECG challenge (Kaggle competition; accept its rules first)
    python -m src.download scans      # "ECG Images dataset of Cardiac Patients" (Kaggle dataset)
    python -m src.download ptbxl      # PTB-XL (PhysioNet): prints the commands to run on a connected machine
    python -m src.download code15     # CODE-15% (Zenodo): prints the commands
    python -m src.download genecg     # GenECG: prints where to get it and where to put it
    python -m src.download bhf --dest=/data/bhf --force

Kaggle sources need an API credential (kaggle.json, or an access token). Without one this stops at once with what to
do, before the `kaggle` package is imported: that import authenticates as a side effect and prints its own help.
A finished download leaves `.ecgka_download.json` in its folder; running again skips it unless --force. On Kaggle,
an attached dataset under /kaggle/input is used as it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zipfile
from pathlib import Path

from .config import parse_args, paths
from .sources import DEFAULT_ROOTS
from .utils import write_json

SOURCES = ("bhf", "scans", "ptbxl", "code15", "genecg")
MARKER = ".ecgka_download.json"


@dataclasses.dataclass
class DownloadConfig:
    source: str = ""  # what to fetch: bhf | scans | ptbxl | code15 | genecg
    dest: str = ""  # folder to fill (default: <input>/<name>, the folder src/sources.py reads by default)
    bhf_competition: str = "bhf-data-science-centre-ecg-challenge"  # Kaggle competition slug
    # The scanned-image set (Mendeley gwbz3fsgp8) has several Kaggle mirrors; this one keeps the original 4 folders.
    scans_dataset: str = "khotijahs1/ecg-images-dataset-of-cardiac-patients"  # Kaggle dataset owner/slug
    force: bool = False  # download again even if the folder holds a finished download
    keep_zip: bool = False  # keep the downloaded archive after unpacking it


# ----------------------------------------------------------------------------------------------------------------
# Kaggle credentials, checked the way kaggle 2.2.4 looks for them, without importing it
# ----------------------------------------------------------------------------------------------------------------
def kaggle_config_dir() -> Path:
    """Where kaggle.json is read from: $KAGGLE_CONFIG_DIR, else ~/.kaggle, else (Linux) $XDG_CONFIG_HOME/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    home = Path.home() / ".kaggle"
    if home.exists() or not sys.platform.startswith("linux"):
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def kaggle_credentials() -> str | None:
    """A description of the credential kaggle would use, or None. A kaggle.json that is not usable is an error."""
    env = os.environ
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN environment variable"
    cfg = kaggle_config_dir() / "kaggle.json"
    if cfg.is_file():
        try:
            values = json.loads(cfg.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{cfg} is not readable JSON ({e}). Download a fresh one: {_TOKEN_HOWTO}") from None
        if not (isinstance(values, dict) and values.get("username") and values.get("key")):
            raise SystemExit(f"{cfg} lacks \"username\" and \"key\". Download a fresh one: {_TOKEN_HOWTO}")
        return str(cfg)
    for name in ("access_token", "access_token.txt", "credentials.json"):  # API token file, `kaggle auth login`
        p = Path.home() / ".kaggle" / name
        if p.is_file() and p.stat().st_size > 0:
            return str(p)
    return None


_TOKEN_HOWTO = ("sign in at https://www.kaggle.com, open Settings (click your picture,\n     then Settings), "
                "find the API section and click \"Create New Token\": your browser saves kaggle.json.")


def missing_credentials_message(what: str, rules_url: str | None = None) -> str:
    rules = (f"  3. Accept the competition's rules once, signed in: {rules_url}\n" if rules_url else "")
    looked = kaggle_config_dir() / "kaggle.json"
    # suggest the folder every Kaggle guide names (kaggle reads it once it exists), unless the user chose another
    cfg_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return f"""Kaggle credentials not found, so {what} was not downloaded.
Looked for: $KAGGLE_USERNAME + $KAGGLE_KEY, $KAGGLE_API_TOKEN, {looked},
            ~/.kaggle/access_token and ~/.kaggle/credentials.json.
To fix it:
  1. Get a token: {_TOKEN_HOWTO}
  2. Put it where kaggle looks and make it private:
       mkdir -p {cfg_dir} && mv ~/Downloads/kaggle.json {cfg_dir}/ && chmod 600 {cfg_dir}/kaggle.json
     (or set KAGGLE_CONFIG_DIR to the folder that holds kaggle.json, or export KAGGLE_USERNAME and KAGGLE_KEY
     with the two values inside it; a newer "API token" string works as export KAGGLE_API_TOKEN=...)
{rules}  {4 if rules else 3}. Run this command again.
Without Kaggle access, the synthetic competition needs no download: python -m src.make_data"""


# ----------------------------------------------------------------------------------------------------------------
# Kaggle downloads
# ----------------------------------------------------------------------------------------------------------------
def _unpack(archive: Path, dest: Path, keep_zip: bool) -> None:
    print(f"unpacking {archive} -> {dest}")
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    except zipfile.BadZipFile:
        raise SystemExit(f"{archive} is not a complete zip (interrupted download?). Run again with --force.") from None
    if not keep_zip:
        archive.unlink()


def _kaggle_fetch(kind: str, slug: str, dest: Path, cfg: DownloadConfig) -> None:
    page = (f"https://www.kaggle.com/competitions/{slug}" if kind == "competition"
            else f"https://www.kaggle.com/datasets/{slug}")
    cred = kaggle_credentials()
    if cred is None:
        raise SystemExit(missing_credentials_message(f"{kind} '{slug}'",
                                                     f"{page}/rules" if kind == "competition" else None))
    print(f"using Kaggle credentials from {cred}")
    import kaggle  # authenticates on import (credentials checked above)

    api = kaggle.api
    api.authenticate()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "competition":
            api.competition_download_files(slug, path=str(dest), force=cfg.force, quiet=False)
        else:
            api.dataset_download_files(slug, path=str(dest), force=cfg.force, quiet=False, unzip=False)
    except Exception as e:  # the client raises requests' HTTPError, or its own errors, depending on the call
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {401: "the credential was refused: create a new token (Settings -> API) and replace the old one",
                403: f"access denied: accept the rules at {page}/rules (competitions) or check the dataset is public",
                404: f"not found: check the slug at {page} (--bhf_competition / --scans_dataset)"}.get(
            status, "see the message above; re-run to resume")
        raise SystemExit(f"Kaggle download of {slug} failed ({type(e).__name__}: {e}): {hint}") from None
    archive = dest / f"{slug.split('/')[-1]}.zip"
    if archive.exists():
        _unpack(archive, dest, cfg.keep_zip)


# ----------------------------------------------------------------------------------------------------------------
# Sources that a script cannot fetch here: print the commands for a connected machine
# ----------------------------------------------------------------------------------------------------------------
def ptbxl_instructions(dest: Path) -> str:
    return f"""PTB-XL 1.0.3 is on PhysioNet (open access, CC BY 4.0; about 3 GB with both sampling rates).
On a machine with internet access run:
  wget -r -N -c -np -nH --cut-dirs=3 -P {dest} https://physionet.org/files/ptb-xl/1.0.3/
(-nH --cut-dirs=3 drops the physionet.org/files/ptb-xl/1.0.3/ folders; the plain
 `wget -r -N -c -np https://physionet.org/files/ptb-xl/1.0.3/` also works: the reader looks a few folders down.)
Or download the zip from https://physionet.org/content/ptb-xl/1.0.3/ and unpack it into {dest}.
(Run elsewhere, then copy the folder here.) The reader needs {dest}/ptbxl_database.csv,
scp_statements.csv and records500/ (or records100/).
Check: python -c "from src import sources; print(len(sources.read_ptbxl('{dest.name}')))"
"""


def code15_instructions(dest: Path) -> str:
    base = "https://zenodo.org/records/4916206/files"
    return f"""CODE-15% is on Zenodo, record 4916206 (https://zenodo.org/records/4916206; CC BY 4.0): exams.csv plus
18 archives exams_part0.zip .. exams_part17.zip (a few GB each), each holding one exams_part<i>.hdf5.
On a machine with internet access run:
  mkdir -p {dest} && cd {dest}
  wget -c -O exams.csv "{base}/exams.csv?download=1"
  for i in $(seq 0 17); do
    wget -c -O exams_part$i.zip "{base}/exams_part$i.zip?download=1" && unzip -n exams_part$i.zip && rm exams_part$i.zip
  done
Any subset of parts works: read_code15 uses the exams whose part is present and reports the rest.
(Run elsewhere, then copy the folder here.) The reader needs {dest}/exams.csv and exams_part*.hdf5 there.
Check: python -c "from src import sources; print(len(sources.read_code15('{dest.name}')))"
"""


def genecg_instructions(dest: Path, ptbxl_dest: Path) -> str:
    return f"""GenECG (Bodagh et al., 2025: PTB-XL re-drawn as ECG images, with and without imperfections) is not on
PhysioNet, Zenodo or Kaggle under a name this script knows; get it from the link in the GenECG paper's data
availability statement, then unpack it into {dest} keeping its folders, e.g.
  {dest}/Dataset_A_ECGs_without_imperfections/00000/00001_hr_1R.png
Labels come from PTB-XL's tables by ecg_id, so PTB-XL's ptbxl_database.csv and scp_statements.csv are also needed in
{ptbxl_dest} (`python -m src.download ptbxl`; the records themselves are not needed for GenECG).
Check: python -c "from src import sources; print(len(sources.read_genecg('{dest.name}', '{ptbxl_dest.name}')))"
"""


# ----------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(DownloadConfig, argv, positional=("source",))
    if cfg.source not in SOURCES:
        raise SystemExit(f"choose what to download: python -m src.download {{{'|'.join(SOURCES)}}} "
                         f"(got {cfg.source!r}); --help lists the options")
    if cfg.source == "bhf":
        name = cfg.bhf_competition
    elif cfg.source == "scans":
        name = cfg.scans_dataset.split("/")[-1]
    else:
        name = DEFAULT_ROOTS[cfg.source]
    dest = Path(cfg.dest) if cfg.dest else paths().input / name
    if cfg.source == "ptbxl":
        print(ptbxl_instructions(dest))
        return 0
    if cfg.source == "code15":
        print(code15_instructions(dest))
        return 0
    if cfg.source == "genecg":
        print(genecg_instructions(dest, paths().input / DEFAULT_ROOTS["ptbxl"]))
        return 0

    if not cfg.force:
        if (dest / MARKER).is_file():
            print(f"{dest} already holds a finished download ({MARKER}); use --force to fetch it again")
            return 0
        for d in paths().read_inputs:  # e.g. a dataset attached to a Kaggle notebook: read-only, already there
            if d != paths().input and (d / name).is_dir() and any((d / name).iterdir()):
                print(f"{d / name} is already attached; nothing to download (readers find it there)")
                return 0
    kind, slug = ("competition", cfg.bhf_competition) if cfg.source == "bhf" else ("dataset", cfg.scans_dataset)
    _kaggle_fetch(kind, slug, dest, cfg)
    write_json(dest / MARKER, {"source": cfg.source, "slug": slug, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    n = sum(1 for _ in dest.rglob("*") if _.is_file())
    print(f"done: {slug} -> {dest} ({n} files). Read it with src.sources "
          f"({'read_competition' if kind == 'competition' else 'read_image_folders'}('{dest.name}')).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
