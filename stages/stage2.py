"""`stage2`: continue stage1's adapter on the production mix (90% empty), briefly.

Short on purpose (0.25-0.5 epoch, lr 1e-4): a long stage2 drifts to answering "empty" for everything.
"""
from stages.common import run_main
from stages.train import mixture_stage


def main(argv=None):
    mixture_stage("stage2", argv, continues=True, module="stages.stage2")


if __name__ == "__main__":
    run_main(main)
