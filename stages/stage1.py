"""`stage1`: learn the task on a balanced mixture (recipe: 25k, 50% positive, 3 epochs, lr 2e-4)."""
from stages.common import run_main
from stages.train import mixture_stage


def main(argv=None):
    mixture_stage("stage1", argv, continues=False, module="stages.stage1")


if __name__ == "__main__":
    run_main(main)
