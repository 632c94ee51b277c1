"""The user's workflow with the real dvc CLI on a tiny pipeline: what reruns after a param change, and
whether `dvc metrics diff`, `dvc exp show` and `dvc plots` give the user numbers to compare.

Everything here runs on one clone of the session's tiny repo (tests/tiny_repo.py); the experiments run in
the order below, each on top of the previous one's workspace, as a user would run them.
"""
from __future__ import annotations

import json
import numbers
import time

import pytest
import yaml

import tiny_repo
from tiny_repo import STAGES, dvc, ran, skipped

pytestmark = pytest.mark.slow

DOWNSTREAM_OF_STAGE2 = ["stage2", "merge", "quantize", "eval"]
EXPERIMENTS = [  # (-S override, stages that must run, in order; every other stage must be skipped)
    ("stage2.lr=5e-5", DOWNSTREAM_OF_STAGE2),
    # 0.5, not the 0.15: the tiny stage2 draws 8 examples, and 8 x 0.10 and 8 x 0.15 both round to one
    # positive, so 0.15 draws the same mixture, trains the same adapter and DVC rightly stops after merge
    ("stage2.positive_ratio=0.5", DOWNSTREAM_OF_STAGE2),
    ("stage1.lr=1e-4", ["stage1", *DOWNSTREAM_OF_STAGE2]),
    ("eval.grammar=true", ["eval"]),
]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Run the whole workflow once; tests below check its parts."""
    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.clone(built.repo, tmp_path_factory.mktemp("workflow") / "repo")
    record = {"repo": repo, "seconds": {}}
    start = time.monotonic()
    record["repro_again"] = dvc(repo, "repro")
    record["status"] = dvc(repo, "status")
    record["seconds"]["repro_again"] = round(time.monotonic() - start, 1)
    record["exps"] = {}
    for override, _ in EXPERIMENTS:
        start = time.monotonic()
        output = dvc(repo, "exp", "run", "-S", override)
        key, value = override.split("=")
        section, name = key.split(".")
        params = yaml.safe_load((repo / "params.yaml").read_text())
        record["exps"][override] = {"output": output, "param": params[section][name],
                                    "seconds": round(time.monotonic() - start, 1)}
    record["repro_after"] = dvc(repo, "repro")
    record["status_after"] = dvc(repo, "status")
    record["metrics_diff"] = json.loads(dvc(repo, "metrics", "diff", "--json"))
    record["exp_show"] = json.loads(dvc(repo, "exp", "show", "--json"))
    record["plots"] = json.loads(dvc(repo, "plots", "show", "--json") or "{}")
    print(f"\nworkflow: repro again {record['seconds']['repro_again']} s; "
          + "; ".join(f"exp run -S {o} {e['seconds']} s" for o, e in record["exps"].items()))
    return record


def test_second_repro_runs_nothing_and_status_is_clean(workflow):
    assert ran(workflow["repro_again"]) == [], workflow["repro_again"]
    assert sorted(skipped(workflow["repro_again"])) == sorted(STAGES)
    assert "Data and pipelines are up to date." in workflow["status"]


@pytest.mark.parametrize("override,expected", EXPERIMENTS, ids=[o for o, _ in EXPERIMENTS])
def test_exp_run_reruns_exactly_the_affected_stages(workflow, override, expected):
    output = workflow["exps"][override]["output"]
    assert ran(output) == expected, output[-3000:]
    assert sorted(skipped(output)) == sorted(set(STAGES) - set(expected)), output[-3000:]


def test_the_set_param_reaches_the_stage(workflow):
    """-S edits params.yaml and the stage reads it: the value lands in the stage's own metrics."""
    repo = workflow["repo"]
    assert workflow["exps"]["stage1.lr=1e-4"]["param"] == pytest.approx(1e-4)
    assert tiny_repo.read_json(repo / "metrics/details/stage1.json")["lr"] == pytest.approx(1e-4)
    assert tiny_repo.read_json(repo / "metrics/details/stage2.json")["lr"] == pytest.approx(5e-5)
    assert tiny_repo.read_json(repo / "metrics/details/eval.json")["engine"]["grammar"] == 1  # a setting: details


def test_repro_after_experiments_runs_nothing(workflow):
    assert ran(workflow["repro_after"]) == []
    assert "Data and pipelines are up to date." in workflow["status_after"]


def _numbers(tree) -> list:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    return [tree] if isinstance(tree, numbers.Number) and not isinstance(tree, bool) else []


def test_metrics_diff_names_what_changed_with_numbers(workflow):
    """One metrics file, flat keys: `dvc metrics show/diff` is one short row, not a wall of '-'."""
    diff = workflow["metrics_diff"]
    assert set(diff) == {"metrics/eval.json"}, diff.keys()
    assert "stage1_loss" in diff["metrics/eval.json"], diff
    assert not any("." in name for name in diff["metrics/eval.json"]), "headline keys are flat"
    for path, changes in diff.items():
        for name, change in changes.items():
            assert set(change) >= {"old", "new"}, (path, name, change)
            if "diff" in change:
                assert isinstance(change["diff"], numbers.Number), (path, name, change)


def test_exp_show_lists_every_experiment_with_params_and_metrics(workflow):
    rows = workflow["exp_show"]
    baseline = next(r for r in rows if r["rev"] != "workspace")
    experiments = baseline["experiments"] or []
    assert len(experiments) == len(EXPERIMENTS), [e.get("name") for e in experiments]
    seen = []
    for exp in experiments:
        data = exp["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]
        seen.append((params["stage1"]["lr"], params["stage2"]["lr"], params["stage2"]["positive_ratio"],
                     params["eval"]["grammar"]))
        metrics = data["metrics"]
        assert set(metrics) == {"metrics/eval.json"}, metrics.keys()
        headline = metrics["metrics/eval.json"]["data"]
        assert len(headline) <= 12 and _numbers(headline), headline
        for key in ("false_positive_rate", "parse_rate", "recall", "person_f1", "stage1_loss", "stage2_steps"):
            assert isinstance(headline[key], numbers.Number), (key, headline)
    assert sorted(seen) == sorted([(1e-3, 5e-5, 0.10, False), (1e-3, 5e-5, 0.5, False),
                                   (1e-4, 5e-5, 0.5, False), (1e-4, 5e-5, 0.5, True)])


def test_plots_show_the_training_curves_and_eval_plots(workflow):
    plots = workflow["plots"].get("data", {})
    names = set(plots)
    assert any("loss" in n for n in names), names
    assert any("confusion" in n for n in names), names
    for name, entries in plots.items():
        values = [v for entry in entries for v in entry["content"]["data"]["values"]]
        assert values, name


def test_a_fresh_clone_with_the_dvc_cache_retrains_nothing(tmp_path_factory):
    """What a teammate (`git clone` + `dvc pull`) and `dvc exp run --queue` (a temp clone) see: every stage up to
    date. An output that lives neither in git nor in the DVC cache would show as deleted and rerun training."""
    built = tiny_repo.session_repo(tmp_path_factory)
    clone = tmp_path_factory.mktemp("git-clone") / "repo"
    tiny_repo.sh(built.repo.parent, "git", "clone", "-q", str(built.repo), str(clone))
    dvc(clone, "cache", "dir", "--local", str(built.repo / ".dvc" / "cache"))
    dvc(clone, "checkout")
    status = dvc(clone, "status")
    assert "Data and pipelines are up to date." in status, status
    assert ran(dvc(clone, "repro")) == []


def test_two_processes_keep_the_step_count_and_the_global_batch(tmp_path_factory):
    """`train.processes: 2` relaunches stage1 under torchrun (gloo on CPU, NCCL on GPUs): the same optimizer steps
    and examples per step as one process (accumulation halves), and rank 0 alone writes the adapter and metrics."""
    import copy
    import subprocess
    import sys

    from jinmei.config.params import read_yaml

    repo = tiny_repo.session_repo(tmp_path_factory).repo
    params = read_yaml(repo / "params.yaml")
    out = tmp_path_factory.mktemp("processes")
    seen = {}
    for n in (1, 2):
        p = copy.deepcopy(params)
        p["train"]["processes"] = n
        (out / f"params-{n}.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "stages.stage1", "--base", "models/base", "--splits", "data/splits",
             "--gate", "data/gates/sanity.json", "--out", str(out / f"stage1-{n}"), "--checkpoints", str(out / f"ck-{n}"),
             "--metrics", str(out / f"stage1-{n}.json"), "--live", str(out / f"live-{n}")],
            cwd=repo, env=tiny_repo.env({"JINMEI_PARAMS": str(out / f"params-{n}.yaml")}),
            capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert ("launching 2 processes" in done.stdout) == (n == 2), done.stdout[-2000:]
        assert (out / f"stage1-{n}" / "adapter_model.safetensors").exists()
        seen[n] = tiny_repo.read_json(out / f"stage1-{n}.json")
    assert (seen[1]["processes"], seen[2]["processes"]) == (1, 2)
    for key in ("steps", "global_batch", "examples_seen"):
        assert seen[2][key] == seen[1][key], (key, seen)


def changed_stages(status: str) -> list[str]:
    """Stage names `dvc status` reports (lines 'name:' at the start, its changes indented beneath)."""
    return sorted(line[:-1] for line in status.splitlines() if line.endswith(":") and not line.startswith((" ", "\t")))


@pytest.mark.parametrize("module,expected", [
    ("jinmei/eval/evaluation.py", ["eval"]),
    ("jinmei/train/trainer.py", ["sanity", "stage1", "stage2"]),
    ("jinmei/config/params.py", []),          # refuse-only: a range or a docstring there never makes a model stale
    ("jinmei/config/preflight.py", []),
])
def test_a_code_edit_makes_exactly_its_stages_stale(tmp_path_factory, module, expected):
    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.clone(built.repo, tmp_path_factory.mktemp("code-edit") / "repo")
    with open(repo / module, "a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    status = dvc(repo, "status")
    assert changed_stages(status) == expected, status


def test_a_queued_sweep_runs_and_jinmei_compare_reads_it_back(tmp_path_factory):
    """The repair ladder as advice prints it: variants queued as named experiments, run by `dvc queue start` (each in
    a temporary clone of the commit), then read back by name through dvc.api by `jinmei-compare`."""
    import subprocess
    import sys

    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.clone(built.repo, tmp_path_factory.mktemp("queue") / "repo")
    names = {"stage2-lr-5e-05": "stage2.lr=5e-05", "stage2-lr-0.002": "stage2.lr=0.002"}
    for name, override in names.items():
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", override)
    dvc(repo, "queue", "start")
    deadline, status = time.monotonic() + 900, ""
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    for name in names:
        assert any(name in line and "Success" in line for line in status.splitlines()), status
    done = subprocess.run([sys.executable, "-m", "jinmei.eval.compare", "HEAD", *names, "--json"], cwd=repo,
                          env=tiny_repo.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["runs"] == ["HEAD", *names] and len(report["pairs"]) == 3
    for pair in report["pairs"]:
        assert pair["articles"] == {"dev_all": 20, "dev_positive": 8}, pair
        assert all(0 <= d["p"] <= 1 for d in pair["decisions"]) and pair["verdict"], pair
