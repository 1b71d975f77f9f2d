"""The demo scenario's well-known names: the webhook URLs of its story and the incident's customer. A
module of its own, so that a page or the demo's runtime decisions can name them without importing (and
building) the scenario."""

DEMO_EXPECTED_WEBHOOK_URL = "https://app.example-saas.com/stripe/webhook"
DEMO_STAGING_WEBHOOK_URL = "https://staging.example-saas.com/stripe/webhook"
DEMO_OLD_WEBHOOK_URL = "https://legacy.example-saas.com/webhooks/stripe"
INCIDENT_EMAIL = "dana.whitfield@example.com"
