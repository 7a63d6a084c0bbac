"""``python -m retnet.evaluation.lm_eval_cli ...``: lm-evaluation-harness's ``lm_eval`` command with ``--model retnet``.

lm-eval finds models only in its registry and reads no plugin entry points, so the stock ``lm_eval`` command does not
know ``retnet``; this module registers it (:mod:`.lm_eval_adapter`) and then runs lm-eval's own command line with
the arguments given, unchanged. Example::

    python -m retnet.evaluation.lm_eval_cli run --model retnet --model_args pretrained=runs/my-run \\
        --tasks hellaswag,boolq --num_fewshot 0 --batch_size 16 --output_path results/
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's command line (``argv``, default ``sys.argv[1:]``) with the ``retnet`` model registered.

    Raises:
        ModuleNotFoundError: lm-eval is not installed (``pip install 'retnet[eval]'``).
    """
    try:
        from lm_eval.__main__ import cli_evaluate
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("lm-eval is not installed; pip install 'retnet[eval]'") from err
    from . import lm_eval_adapter  # noqa: F401  (registers the "retnet" model)

    if argv is None:
        cli_evaluate()
        return
    # lm-eval's parser reads sys.argv itself; give it argv for the call and restore it afterwards.
    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
