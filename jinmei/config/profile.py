"""`python -m jinmei.config.profile PROFILE [--params params.yaml]`: apply a profile (a delta over params.yaml) in place.

A profile holds only the keys that differ from params.yaml, so the two cannot drift apart silently. The result is
checked as every stage checks it before params.yaml is replaced; comments and layout are kept (ruamel.yaml,
which DVC itself uses), so `dvc exp run -S` and `dvc params diff` keep working on the result.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

from jinmei.errors import JinmeiError, run_main
from jinmei.files import atomic_path
from jinmei.config.params import parse, read_yaml


def _merge_into(target, delta, where: str) -> None:
    for key, value in delta.items():
        if key not in target:
            raise JinmeiError(f"{where}{key}: not a key of params.yaml; a profile only changes existing knobs")
        if isinstance(value, dict):
            if not isinstance(target[key], dict):
                raise JinmeiError(f"{where}{key}: params.yaml holds a value here, the profile a section")
            _merge_into(target[key], value, f"{where}{key}.")
        else:
            target[key] = value


def apply(profile: Path, params_file: Path) -> str:
    """The text of params_file with profile applied; raises before anything is written."""
    from ruamel.yaml import YAML

    delta = read_yaml(profile)
    if not isinstance(delta, dict):
        raise JinmeiError(f"{profile}: a profile is a mapping of params.yaml sections")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.representer.add_representer(type(None),   # `key: null`, as params.yaml writes it, not a bare `key:`
                                   lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(Path(params_file).read_text(encoding="utf-8"))
    plain = YAML(typ="rt").load(profile.read_text(encoding="utf-8"))
    try:
        _merge_into(doc, plain, "")
    except JinmeiError as e:
        raise JinmeiError(f"{profile}: {e}") from None
    out = io.StringIO()
    rt.dump(doc, out)
    text = out.getvalue()
    import yaml

    from jinmei.config.params import ParamsLoader

    try:
        parse(yaml.load(text, Loader=ParamsLoader))
    except JinmeiError as e:
        raise JinmeiError(f"{profile} applied to {params_file}: {e}") from None
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    text = apply(args.profile, args.params)
    with atomic_path(args.params) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"{args.params}: {args.profile} applied and checked; `git diff {args.params}` shows what changed")


if __name__ == "__main__":
    run_main(main)
