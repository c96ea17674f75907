"""Where a verb's answers come from: this process (``local``) or a Genesis server (``remote``)."""
