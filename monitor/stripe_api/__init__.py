"""The Stripe side: the only importer of `stripe` (source), the sync, the rate limit, a payment's live state
at Stripe, and webhook replay signed as Stripe signs."""
