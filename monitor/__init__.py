"""Payment Parity Monitor: watches the path from a Stripe payment to the app's subscription row."""
