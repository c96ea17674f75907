"""Pure domain: models, validation and decisions. No I/O libraries here."""
