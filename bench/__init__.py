from pathlib import Path

# `../shared/fixtures` beside the checkout, where CI and the sessions keep the fixtures.
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
