"""Regenerate the production-traffic prompt files of ``python -m evals.traffic``.

    python -m evals.datasets.traffic._generate

``steady.jsonl`` is what the embedded champion's users send on a normal day: short
shorthand order lines in English (with the canonical line as the reference the client
grades the answer against), a few support and menu questions. ``drift.jsonl`` is the
same shop a few weeks later: longer multi-item orders with chatter around them, far
more support questions, and customers writing in Spanish, German and French. The
drift scenario moves from the first to the second over a run, so the drift monitor
has a shift in prompt length, topic and language to find.

Written by hand from the tables below and evals/datasets/_generate.py's order lines;
deterministic (same tables, same bytes); the JSONL files are committed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from evals.datasets._generate import order_items

HERE = Path(__file__).resolve().parent
USERS_STEADY = 60
USERS_DRIFT = 80

SUPPORT_EN = [
    "where is my order?", "my pizza arrived cold, can I get a refund?", "how long does delivery take?",
    "can I change my delivery address?", "do you deliver after midnight?", "I was charged twice",
    "cancel my last order please", "is there a delivery fee?",
]
MENU_EN = [
    "do you have gluten free crust?", "what vegan options do you have?", "what sizes do pizzas come in?",
    "is the bbq chicken pizza spicy?",
]
SUPPORT_LONG_EN = [
    "Hi, I ordered about an hour ago and the app still says preparing, my kids are hungry, "
    "can you tell me where my order is and when it will arrive?",
    "Hello, the pizza I got yesterday was missing the toppings I paid for and the driver was rude, "
    "I would like a refund or a voucher for my next order please.",
    "I moved last week and I need to update my delivery address for the weekly order that is set up "
    "on my account, how do I do that without cancelling it?",
    "Why was I charged a delivery fee when the website says delivery is free over twenty dollars "
    "and my order was twenty-four dollars?",
]
# (language, text): the same questions customers ask, in their own language
FOREIGN = [
    ("es", "¿dónde está mi pedido?"), ("es", "mi pizza llegó fría, quiero un reembolso"),
    ("es", "¿cuánto tarda la entrega?"), ("es", "2 pizzas grandes de pepperoni por favor"),
    ("es", "¿tienen masa sin gluten?"), ("es", "quiero cancelar mi último pedido"),
    ("de", "wo ist meine Bestellung?"), ("de", "meine Pizza kam kalt an, ich möchte eine Erstattung"),
    ("de", "wie lange dauert die Lieferung?"), ("de", "eine große Pizza Hawaii und zwei Cola bitte"),
    ("de", "gibt es vegane Pizzen?"), ("de", "mir wurde zweimal abgebucht"),
    ("fr", "où est ma commande ?"), ("fr", "ma pizza est arrivée froide, je veux être remboursé"),
    ("fr", "combien de temps prend la livraison ?"), ("fr", "une pizza moyenne végétarienne s'il vous plaît"),
    ("fr", "avez-vous une pâte sans gluten ?"), ("fr", "annulez ma dernière commande s'il vous plaît"),
]
CHATTER = [
    "hey there, quick one for tonight: {order}, and {order2} too, thanks so much!",
    "Hi! Could you put in {order} plus {order2}? We are at home all evening.",
    "ok so for the party we need {order} and also {order2}, please hurry if you can",
]


def _line(prompt: str, user: str, topic: str, language: str, reference: str | None = None) -> dict:
    row = {"prompt": prompt, "user_id": user, "topic": topic, "language": language}
    if reference is not None:
        row["reference"] = reference
    return row


def steady(rng: random.Random) -> list[dict]:
    orders = order_items()
    rows = []
    for i in range(240):
        user = f"user-{rng.randrange(USERS_STEADY):03d}"
        roll = rng.random()
        if roll < 0.8:
            item = orders[i % len(orders)]
            rows.append(_line(item["prompt"], user, "orders", "en", item["reference"]))
        elif roll < 0.93:
            rows.append(_line(rng.choice(SUPPORT_EN), user, "support", "en"))
        else:
            rows.append(_line(rng.choice(MENU_EN), user, "menu", "en"))
    return rows


def drift(rng: random.Random) -> list[dict]:
    orders = order_items()
    rows = []
    for _ in range(240):
        user = f"user-{rng.randrange(USERS_DRIFT):03d}"
        roll = rng.random()
        if roll < 0.35:
            a, b = rng.sample(orders, 2)
            text = rng.choice(CHATTER).format(order=a["prompt"], order2=b["prompt"])
            rows.append(_line(text, user, "orders", "en", f"{a['reference']}; {b['reference']}"))
        elif roll < 0.65:
            rows.append(_line(rng.choice(SUPPORT_LONG_EN), user, "support", "en"))
        else:
            language, text = rng.choice(FOREIGN)
            rows.append(_line(text, user, "support", language))
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def main() -> None:
    write(HERE / "steady.jsonl", steady(random.Random(11)))
    write(HERE / "drift.jsonl", drift(random.Random(12)))


if __name__ == "__main__":
    main()
