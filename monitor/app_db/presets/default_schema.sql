-- The app's default schema (DESIGN.md "The app's database: the default schema"), modelled on the
-- incident's Django app. It deliberately has no unique constraint on the Stripe ids, like that app:
-- exactly-once activation must not depend on one.
CREATE TABLE subscriptions (
  id INTEGER PRIMARY KEY,
  customer_email TEXT NOT NULL,
  stripe_customer_id TEXT,
  stripe_checkout_session_id TEXT,
  stripe_payment_intent_id TEXT,
  stripe_subscription_id TEXT,
  plan TEXT,
  amount INTEGER,
  currency TEXT,
  status TEXT NOT NULL,
  created_at TIMESTAMP NOT NULL,
  activated_at TIMESTAMP,
  current_period_end TIMESTAMP
);
CREATE TABLE webhook_events (
  stripe_event_id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  received_at TIMESTAMP NOT NULL,
  processed_at TIMESTAMP,
  status TEXT NOT NULL,
  error TEXT
);
