"""``python -m mmfuse …``: the command line (also ``torchrun -m mmfuse …``)."""

from mmfuse.cli import main

main()
