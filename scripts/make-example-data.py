#!/usr/bin/env python3
"""Writes the bundled example datasets (tests/examples/*/data.jsonl) deterministically.

The data is synthetic, made from templates with a fixed seed, so it can be regenerated and
reviewed: `python3 scripts/make-example-data.py`.
"""
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tests" / "examples"


def sentiment(rng):
    products = ["blender", "kettle", "vacuum cleaner", "desk lamp", "backpack", "phone case",
                "coffee grinder", "office chair", "toaster", "rain jacket", "headphones",
                "water bottle", "keyboard", "frying pan", "electric toothbrush", "tent"]
    positive = ["works perfectly", "is excellent value", "exceeded my expectations",
                "is sturdy and well made", "is a joy to use every day", "arrived early and works great",
                "is the best I have owned", "does exactly what I needed"]
    negative = ["broke after two days", "is a waste of money", "stopped working within a week",
                "feels cheap and flimsy", "arrived damaged", "is far too noisy to use",
                "never worked properly", "is the worst purchase I have made"]
    neutral = ["arrived on Tuesday", "comes in a cardboard box", "is available in three colours",
               "is the same model as my old one", "weighs about two kilograms",
               "was delivered by courier", "has a one-year warranty", "came with a manual in English"]
    openers = ["", "Honestly, ", "Update: ", "After a month, ", "For what it's worth, "]
    rows = []
    seen = set()
    while len(rows) < 240:
        label = ["positive", "negative", "neutral"][len(rows) % 3]
        phrase = rng.choice({"positive": positive, "negative": negative, "neutral": neutral}[label])
        text = f"{rng.choice(openers)}the {rng.choice(products)} {phrase}."
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        rows.append({"review": text, "sentiment": label})
    return rows


def contacts(rng):
    first = ["Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
             "Kira", "Liam", "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara"]
    cities = ["Lisbon", "Oslo", "Leeds", "Munich", "Lyon", "Porto", "Ghent", "Turin", "Cork", "Graz"]
    items = ["chairs", "lamps", "boxes of tiles", "tins of paint", "rolls of cable", "bags of soil"]
    templates = [
        "Hi, this is {name} from {city}. Could you send {qty} {item}?",
        "{name} here ({city} branch): please reserve {qty} {item} for Friday.",
        "Order request from {city}: {qty} {item}, contact {name}.",
        "Hello! {name} in {city} would like {qty} {item} delivered.",
        "Please ship {qty} {item} to {name}, {city}.",
    ]
    rows = []
    seen = set()
    while len(rows) < 120:
        name, city, item = rng.choice(first), rng.choice(cities), rng.choice(items)
        qty = rng.randint(1, 40)
        message = rng.choice(templates).format(name=name, city=city, qty=qty, item=item)
        if message in seen:
            continue
        seen.add(message)
        rows.append({"message": message, "name": name, "city": city, "quantity": qty})
    return rows


def write(name, rows):
    path = ROOT / name / "data.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    write("sentiment", sentiment(random.Random(20261122)))
    write("contacts", contacts(random.Random(20261123)))
