"""A local Stripe API emulator: Stripe's list semantics over in-memory state, for the demo and the tests."""
