"""The set-up check (jinmei/check_install.py) on this machine's real llama.cpp build."""
import subprocess
import sys

import llama_cpp
import pytest


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jinmei.check_install", *args], capture_output=True, text=True)


def test_the_check_decodes_in_a_llama_worker():
    done = run_check()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decodes a 407-token prompt" in done.stdout


@pytest.mark.skipif(llama_cpp.llama_supports_gpu_offload(), reason="a GPU build: --gpu can pass here")
def test_gpu_mode_refuses_a_build_without_gpu_offload():
    done = run_check("--gpu")
    assert done.returncode == 1
    assert "built without GPU offload" in done.stderr and "setup.sh gpu" in done.stderr
