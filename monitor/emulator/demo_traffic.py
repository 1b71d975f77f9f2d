"""The demo's ordinary traffic: a month of customers of a small SaaS buying its plans at realistic hours of
the day, each payment with the row the app made for it, and none of them a finding (the cases of
monitor.emulator.demo are).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime

from monitor.emulator.demo_payments import DAY, HOUR, Plan, add_months
from monitor.emulator.demo_subscriptions import SubscriptionBuilder

# Ordinary traffic stops this long before the anchor, so only the cases live inside the grace period.
QUIET_BEFORE_ANCHOR = 15 * 60
# Checkouts per hour of the day (UTC): quiet nights, busy working hours on both sides of the Atlantic.
_HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 3, 4, 6, 7, 8, 8, 8, 9, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
_FIRST_TEXT = """
Alex Amelia Ben Carla Chen Daniel Elena Ethan Fatima Felix Gabriel Hana Isaac Jade Jonas Julia Kai
Laura Leo Lina Luca Maya Mateo Mia Nadia Nico Nina Noah Olivia Oscar Paula Quinn Rafael Rosa Sam
Sara Simon Tara Theo Uma Victor Wen Yara Yusuf Zoe Aaron Bianca Clara David Emil Freya Hugo Ines
Jakob Kenji Lucia Marta Nora Pedro
"""
_FIRST = _FIRST_TEXT.split()
_LAST_TEXT = """
Abbott Andersen Baker Brooks Castillo Chen Costa Dubois Evans Ferreira Fischer Garcia Hansen Hughes
Ito Jensen Kaur Kim Kowalski Larsen Lopez Martin Meyer Moreno Nguyen Nielsen Novak Okoro Olsen Park
Patel Perez Quinn Reyes Rossi Russo Santos Schmidt Silva Singh Sousa Suzuki Takahashi Torres Vargas
Walsh Weber Wilson Wright Young Zhang Ali Becker Bauer Conti Dahl Eriksen
"""
_LAST = _LAST_TEXT.split()
_DOMAINS = ("example.com", "example.org", "example.net")

# What the SaaS sells, each plan with its weight among ordinary customers' purchases.
ONE_TIME_PLANS = (
    (Plan("starter_annual", "Starter (1 year)", 4900, "usd", None), 22),
    (Plan("pro_annual", "Pro (1 year)", 14900, "usd", None), 45),
    (Plan("team_annual", "Team (1 year)", 29900, "usd", None), 18),
    (Plan("pro_annual", "Pro (1 year)", 13900, "eur", None), 10),
    (Plan("pro_annual", "Pro (1 year)", 11900, "gbp", None), 5),
)
SUBSCRIPTION_PLANS = (
    (Plan("pro_monthly", "Pro (monthly)", 1900, "usd", "month"), 50),
    (Plan("team_monthly", "Team (monthly)", 4900, "usd", "month"), 25),
    (Plan("pro_monthly", "Pro (monthly)", 1700, "eur", "month"), 10),
    (Plan("pro_yearly", "Pro (yearly)", 14900, "usd", "year"), 15),
)


class TrafficBuilder(SubscriptionBuilder):
    """A SubscriptionBuilder that adds the month's ordinary customers, never at an address of `reserved`."""

    def __init__(self, anchor: datetime, seed: int, reserved: Iterable[str]):
        super().__init__(anchor, seed)
        self.emails: set[str] = set(reserved)

    def _person(self) -> tuple[str, str]:
        while True:
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            local = self.rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}", first + last))
            email = f"{local.lower()}@{self.rng.choice(_DOMAINS)}"
            if email not in self.emails:
                self.emails.add(email)
                return f"{first} {last}", email

    def ordinary_traffic(self) -> None:
        starts = []
        for day in range(30, 0, -1):
            day_start = self.now - day * DAY
            for _ in range(self.rng.randint(8, 15)):
                hour = self.rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
                started = day_start + hour * HOUR + self.rng.randrange(HOUR)
                if started < self.now - QUIET_BEFORE_ANCHOR - 300:
                    starts.append(started)
        # Monthly subscribers from the month before, whose first renewal falls inside the month shown.
        for _ in range(self.rng.randint(30, 42)):
            starts.append(self.now - self.rng.randint(34 * DAY, 57 * DAY))
        for started in sorted(starts):
            name, email = self._person()
            before = started < self.now - 30 * DAY
            plans = (
                SUBSCRIPTION_PLANS[:3] if before else self.rng.choice((ONE_TIME_PLANS, SUBSCRIPTION_PLANS))
            )
            plan = _weighted(self.rng, plans)
            if plan.interval == "month":
                # A renewal after the move to staging would never reach the app: a finding. Ordinary
                # traffic has none; the renewal_not_extended case is that story.
                first_renewal = add_months(started, 1)
                if self.moved_at - 3 * HOUR <= first_renewal <= self.now + HOUR:
                    plan = _weighted(self.rng, ONE_TIME_PLANS)
            customer = self._customer(name, email, started + 30, plan.currency)
            if plan.interval is None:
                pay = self.one_time(customer, plan, started)
            else:
                pay = self.subscribe(customer, plan, started, renew_until=self.moved_at - HOUR)
            self.row(pay)


def _weighted(rng: random.Random, plans) -> Plan:
    return rng.choices([p for p, _ in plans], weights=[w for _, w in plans])[0]
