"""The incident's kind of Django app: a subscription row per purchase, owned by a Django user (the e-mail
lives on `auth_user`), and the app's own audit of the webhooks it received. Tables: `payments_subscription`,
`payments_webhookaudit`."""

from django.conf import settings
from django.db import models


class Subscription(models.Model):
    class State(models.TextChoices):
        PENDING = "PENDING"
        ACTIVE = "ACTIVE"
        CANCELED = "CANCELED"
        EXPIRED = "EXPIRED"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.CharField(max_length=50, blank=True, null=True)
    stripe_customer = models.CharField(max_length=255, blank=True, null=True)
    stripe_session = models.CharField(max_length=255, blank=True, null=True)
    stripe_intent = models.CharField(max_length=255, blank=True, null=True)
    stripe_sub = models.CharField(max_length=255, blank=True, null=True)
    price_cents = models.PositiveIntegerField(null=True)
    price_currency = models.CharField(max_length=3, default="usd")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created = models.DateTimeField(auto_now_add=True)
    activated = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)


class WebhookAudit(models.Model):
    """One row per webhook delivery the app received (Stripe retries make several rows per event)."""

    event_id = models.CharField(max_length=255, db_index=True)
    kind = models.CharField(max_length=100)
    received = models.DateTimeField(auto_now_add=True)
    handled = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    message = models.TextField(blank=True)
