"""jinmei: one module per DVC stage, plus the few shared modules they use."""
