"""The ``genesis`` command, kubectl-style: one module per verb, pure printers."""
