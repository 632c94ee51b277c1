"""jinmei: the library beneath the DVC stages in stages/ (one module per role; README "Layout").

Package files hold no code, so no stage depends on them (tests/test_layout.py checks both).
"""
