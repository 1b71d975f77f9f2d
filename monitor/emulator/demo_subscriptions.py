"""The demo's subscription payments: a subscription-mode Checkout Session with its Subscription, first
Invoice and the renewals Stripe charges each period, each invoice with its PaymentIntent, Charge and events
(the objects of one payment are made by monitor.emulator.demo_payments).
"""

from __future__ import annotations

import copy
from datetime import datetime

from monitor.emulator.demo_payments import DAY, HOUR, Payment, PaymentBuilder, Plan, add_months
from monitor.emulator.shapes import example, examples

RENEWAL_DELAY = HOUR + 60


def _period_end(anchor_ts: int, interval: str | None, periods: int) -> int:
    """End of the `periods`-th period counted from a billing cycle anchor."""
    if interval is None:
        return anchor_ts + 365 * DAY * periods
    return add_months(anchor_ts, periods * (12 if interval == "year" else 1))


def _prev_start(sub: dict, start: int) -> int:
    interval = sub["items"]["data"][0]["price"]["recurring"]["interval"]
    return add_months(start, -12 if interval == "year" else -1)


class SubscriptionBuilder(PaymentBuilder):
    """A PaymentBuilder that also sells subscriptions; each plan gets one Stripe price and product."""

    def __init__(self, anchor: datetime, seed: int):
        super().__init__(anchor, seed)
        self.prices: dict[Plan, tuple[str, str]] = {}

    def _price(self, plan: Plan) -> tuple[str, str]:
        if plan not in self.prices:
            self.prices[plan] = (self._id("price_"), self._id("prod_", 14))
        return self.prices[plan]

    def _invoice(
        self, pay: Payment, sub: dict, created: int, paid_at: int, start: int, end: int, reason: str
    ) -> tuple[dict, dict, dict]:
        """A paid subscription invoice for the period [start, end], with its PaymentIntent and Charge."""
        customer, plan = pay.customer, pay.plan
        finalized = max(created, paid_at - 3)
        inv_id = self._id("in_")
        price_id, product_id = self._price(plan)
        intent, charge = self._intent_and_charge(
            customer,
            plan.amount,
            plan.currency,
            paid_at - 2,
            "Subscription creation" if reason == "subscription_create" else "Subscription update",
        )
        item = sub["items"]["data"][0]
        line = copy.deepcopy(examples()["invoice"]["lines"]["data"][0])
        line.update(
            id=self._id("il_"),
            amount=plan.amount,
            subtotal=plan.amount,
            currency=plan.currency,
            description=f"1 × {plan.name}",
            invoice=inv_id,
            period={"start": start, "end": end},
            subscription=sub["id"],
            taxes=[],
            pretax_credit_amounts=[],
            discount_amounts=[],
            parent={
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                },
            },
            pricing={
                "type": "price_details",
                "price_details": {"price": price_id, "product": product_id},
                "unit_amount_decimal": str(plan.amount),
            },
        )
        sequence = customer["next_invoice_sequence"]
        customer["next_invoice_sequence"] = sequence + 1
        invoice = example(
            "invoice",
            id=inv_id,
            account_name="Example SaaS Inc.",
            amount_due=plan.amount,
            amount_paid=plan.amount,
            amount_remaining=0,
            amount_overpaid=0,
            attempt_count=1,
            attempted=True,
            billing_reason=reason,
            created=created,
            currency=plan.currency,
            customer=customer["id"],
            customer_email=customer["email"],
            customer_name=customer["name"],
            customer_shipping=None,
            due_date=None,
            effective_at=finalized,
            ending_balance=0,
            from_invoice=None,
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_demo/{self._id('test_', 40)}",
            invoice_pdf=f"https://pay.stripe.com/invoice/acct_demo/{self._id('test_', 40)}/pdf",
            last_finalization_error=None,
            lines={
                "object": "list",
                "data": [line],
                "has_more": False,
                "url": f"/v1/invoices/{inv_id}/lines",
            },
            next_payment_attempt=None,
            number=f"{customer['invoice_prefix']}-{sequence:04d}",
            # Stripe's invoice period is the one *before* the period billed; the lines hold the one paid for.
            period_start=created if reason == "subscription_create" else _prev_start(sub, start),
            period_end=created if reason == "subscription_create" else start,
            shipping_cost=None,
            shipping_details=None,
            status="paid",
            status_transitions={
                "finalized_at": finalized,
                "marked_uncollectible_at": None,
                "paid_at": paid_at,
                "voided_at": None,
            },
            subscription=sub["id"],
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": sub["id"], "metadata": {}},
            },
            payments={
                "object": "list",
                "data": [
                    example(
                        "invoice_payment",
                        id="inpay_" + inv_id[3:],  # from the invoice's id: no draw from the rng
                        amount_paid=plan.amount,
                        amount_requested=plan.amount,
                        created=finalized,
                        currency=plan.currency,
                        invoice=inv_id,
                        is_default=True,
                        livemode=False,
                        payment={"type": "payment_intent", "payment_intent": intent["id"]},
                        status="paid",
                        status_transitions={"canceled_at": None, "paid_at": paid_at},
                    )
                ],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
            subtotal=plan.amount,
            subtotal_excluding_tax=plan.amount,
            total=plan.amount,
            total_excluding_tax=plan.amount,
            total_taxes=[],
            total_pretax_credit_amounts=[],
            webhooks_delivered_at=created,
            livemode=False,
            metadata={},
        )
        self._add(invoice)
        pay.events.append(
            self._event(
                "payment_intent.succeeded", intent, paid_at, automatic=reason != "subscription_create"
            )
        )
        return invoice, intent, charge

    def subscribe(
        self, customer: dict, plan: Plan, started: int, renew_until: int, paid_at: int | None = None
    ) -> Payment:
        """A subscription-mode Checkout Session with its Subscription (billing cycle anchored at the
        payment), first Invoice, and the renewals paid before `renew_until`."""
        paid_at = paid_at if paid_at is not None else started + self.rng.randint(40, 240)
        sub_id = self._id("sub_")
        price_id, product_id = self._price(plan)
        item = copy.deepcopy(examples()["subscription"]["items"]["data"][0])
        item["price"].update(
            id=price_id,
            product=product_id,
            currency=plan.currency,
            unit_amount=plan.amount,
            unit_amount_decimal=str(plan.amount),
            created=self.now - 400 * DAY,
            lookup_key=plan.key,
            nickname=plan.name,
            custom_unit_amount=None,
            transform_quantity=None,
            recurring={
                "interval": plan.interval,
                "interval_count": 1,
                "meter": None,
                "usage_type": "licensed",
                "trial_period_days": None,
            },
        )
        item["plan"].update(
            id=price_id,
            product=product_id,
            currency=plan.currency,
            amount=plan.amount,
            amount_decimal=str(plan.amount),
            billing_scheme="per_unit",
            created=self.now - 400 * DAY,
            interval=plan.interval,
            interval_count=1,
            livemode=False,
            metadata={},
            nickname=plan.name,
            transform_usage=None,
        )
        item.update(
            id=self._id("si_", 14),
            created=paid_at,
            subscription=sub_id,
            billing_thresholds=None,
            current_period_start=paid_at,
            current_period_end=_period_end(paid_at, plan.interval, 1),
        )
        sub = example(
            "subscription",
            id=sub_id,
            customer=customer["id"],
            created=paid_at,
            start_date=paid_at,
            billing_cycle_anchor=paid_at,
            billing_cycle_anchor_config=None,
            cancel_at=None,
            canceled_at=None,
            cancel_at_period_end=False,
            ended_at=None,
            trial_start=None,
            trial_end=None,
            currency=plan.currency,
            items={
                "object": "list",
                "data": [item],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            status="active",
            next_pending_invoice_item_invoice=None,
            pause_collection=None,
            pending_invoice_item_interval=None,
            pending_update=None,
            billing_thresholds=None,
            billing_schedules=[],
            transfer_data=None,
            default_payment_method=None,
            livemode=False,
            metadata={},
        )
        self._add(sub)
        # The subscription and its first invoice start the period together; the card is charged just after.
        pay = Payment(customer, plan, paid_at + 3, {}, {}, {}, subscription=sub)
        invoice, intent, charge = self._invoice(
            pay, sub, paid_at, paid_at + 3, paid_at, item["current_period_end"], "subscription_create"
        )
        sub["latest_invoice"] = invoice["id"]
        pay.invoice, pay.payment_intent, pay.charge = invoice, intent, charge
        pay.session = self._session(
            customer,
            plan,
            started,
            mode="subscription",
            payment_intent=None,
            subscription=sub_id,
            invoice=invoice["id"],
            customer_creation=None,
            invoice_creation=None,
            payment_method_collection="always",
        )
        pay.events.append(self._event("customer.subscription.created", sub, paid_at + 1))
        pay.events.append(self._event("invoice.paid", invoice, paid_at + 4))
        pay.events.append(self._event("checkout.session.completed", pay.session, paid_at + 5))
        periods = 1
        # Stripe opens the renewal invoice at the period's start and charges it about an hour later.
        while (renewal := _period_end(paid_at, plan.interval, periods)) + RENEWAL_DELAY < renew_until:
            periods += 1
            end = _period_end(paid_at, plan.interval, periods)
            previous = {
                "latest_invoice": sub["latest_invoice"],
                "items": {"data": [{k: item[k] for k in ("current_period_start", "current_period_end")}]},
            }
            due = renewal + RENEWAL_DELAY - self.rng.randint(0, 50)
            invoice, _, _ = self._invoice(pay, sub, renewal, due, renewal, end, "subscription_cycle")
            item.update(current_period_start=renewal, current_period_end=end)
            sub["latest_invoice"] = invoice["id"]
            pay.renewals.append(invoice)
            updated = self._event("customer.subscription.updated", sub, renewal + 1, automatic=True)
            updated["data"]["previous_attributes"] = previous
            pay.events.append(updated)
            pay.events.append(self._event("invoice.paid", invoice, due + 2, automatic=True))
        return pay
