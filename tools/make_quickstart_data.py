"""Write the quickstart's dataset: extract a person's details from one sentence as strict, compact JSON.

SmolLM2-135M-Instruct, asked this out of the box, chats, wraps the answer in Markdown or invents keys; a few minutes
of LoRA teaches it the exact format. Records are generated from a fixed seed, so every machine gets the same files.

Usage: python tools/make_quickstart_data.py [--out data/quickstart] [--train 480] [--val 48]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FIRST = (
    "Ana Ben Chloe Diego Elena Farid Grace Hiro Ines Jonas Kofi Lena Mateo Nadia Omar Priya Quinn Rosa Sven Tara Umar "
    "Vera Wen Yusuf Zoe"
).split()
LAST = (
    "Silva Okafor Novak Tanaka Müller Haddad Kowalski Lindqvist Moreau Rossi Chen Patel Garcia Ivanova Brennan".split()
)
CITIES = "Lisbon Nairobi Oslo Osaka Lyon Austin Krakow Cairo Lima Dublin Pune Seoul Quito Perth Turin".split()
JOBS = [
    "nurse",
    "pilot",
    "carpenter",
    "data analyst",
    "chef",
    "teacher",
    "architect",
    "plumber",
    "journalist",
    "pharmacist",
    "welder",
    "librarian",
    "software engineer",
    "florist",
    "translator",
]
SENTENCES = [
    "{name} is a {age}-year-old {job} who lives in {city}.",
    "Meet {name}: {age} years old, working as a {job} in {city}.",
    "In {city}, {name} ({age}) has worked as a {job} for years.",
    "{name}, aged {age}, moved to {city} to become a {job}.",
    "Our new {job}, {name}, is {age} and comes from {city}.",
    "At {age}, {name} runs a small business as a {job} in {city}.",
]
INSTRUCTION = 'Extract the person as JSON with keys "name", "age", "city", "job". Reply with the JSON only.'


def make_record(rng: random.Random) -> dict[str, str]:
    person = {
        "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "age": rng.randint(19, 78),
        "city": rng.choice(CITIES),
        "job": rng.choice(JOBS),
    }
    sentence = rng.choice(SENTENCES).format(**person)
    return {"instruction": INSTRUCTION, "input": sentence, "output": json.dumps(person, ensure_ascii=False)}


def write(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/quickstart"))
    parser.add_argument("--train", type=int, default=480)
    parser.add_argument("--val", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    records = [make_record(rng) for _ in range(args.train + args.val)]
    write(args.out / "train.jsonl", records[: args.train])
    write(args.out / "val.jsonl", records[args.train :])
    print(f"Wrote {args.train} training and {args.val} validation records to {args.out}")


if __name__ == "__main__":
    main()
