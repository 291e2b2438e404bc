"""Write the embedded demo's instruction data and benchmark items (deterministic; run once, output committed).

Six task families a model of a few hundred thousand parameters can learn in a minute: number words
English<->French, capitals, opposites, addition, sorting, and animal descriptions (long completions,
so the Short derivation has records to swap). The benchmark items come from the same families:
capitals as 4-way multiple choice, opposites as a WinoGrande-style two-option fill-in, and number
translation in the schema of the upstream WMT datasets.

    python resources/demo/make_demo_data.py
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

EN_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
FR_UNITS = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze "
            "seize dix-sept dix-huit dix-neuf").split()
FR_TENS = "_ _ vingt trente quarante cinquante soixante".split()

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Portugal": "Lisbon",
    "Austria": "Vienna", "Poland": "Warsaw", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Ireland": "Dublin", "Hungary": "Budapest",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi",
    "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Canada": "Ottawa", "Mexico": "Mexico City",
    "Russia": "Moscow", "Turkey": "Ankara", "Iran": "Tehran", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Australia": "Canberra",
}

OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("open", "closed"),
    ("light", "dark"), ("happy", "sad"), ("early", "late"), ("full", "empty"), ("hard", "soft"),
    ("young", "old"), ("rich", "poor"), ("strong", "weak"), ("wet", "dry"), ("loud", "quiet"),
    ("long", "short"), ("thick", "thin"), ("heavy", "light"), ("clean", "dirty"), ("near", "far"),
    ("high", "low"), ("first", "last"), ("win", "lose"), ("push", "pull"), ("day", "night"),
]

# Objects for the translation sentences "I have <n> <objects>." / "J'ai <n> <objets>."
OBJECTS = [("apples", "pommes"), ("books", "livres"), ("cats", "chats"), ("friends", "amis"),
           ("chairs", "chaises"), ("pens", "stylos")]

ANIMALS = {
    "cat": ("four", "homes", "fish and mice", "meows"), "dog": ("four", "homes", "meat", "barks"),
    "cow": ("four", "farms", "grass", "moos"), "duck": ("two", "ponds", "seeds", "quacks"),
    "horse": ("four", "farms", "hay", "neighs"), "owl": ("two", "forests", "mice", "hoots"),
    "frog": ("four", "ponds", "insects", "croaks"), "lion": ("four", "savannas", "meat", "roars"),
    "sheep": ("four", "farms", "grass", "bleats"), "wolf": ("four", "forests", "meat", "howls"),
    "goat": ("four", "hills", "leaves", "bleats"), "bee": ("six", "hives", "nectar", "buzzes"),
    "pig": ("four", "farms", "scraps", "oinks"), "crow": ("two", "fields", "seeds", "caws"),
    "mouse": ("four", "fields", "grain", "squeaks"), "snake": ("no", "deserts", "mice", "hisses"),
}


def english_number(n: int) -> str:
    if n < 20:
        return EN_UNITS[n]
    tens, unit = divmod(n, 10)
    return EN_TENS[tens] + ("-" + EN_UNITS[unit] if unit else "")


def french_number(n: int) -> str:
    if n < 20:
        return FR_UNITS[n]
    if n < 70:
        tens, unit = divmod(n, 10)
        if unit == 0:
            return FR_TENS[tens]
        return FR_TENS[tens] + (" et un" if unit == 1 else "-" + FR_UNITS[unit])
    if n < 80:
        return "soixante" + (" et onze" if n == 71 else "-" + FR_UNITS[n - 60])
    if n == 80:
        return "quatre-vingts"
    return "quatre-vingt-" + FR_UNITS[n - 80]


def sentence_pair(n: int, objects: tuple[str, str]) -> tuple[str, str]:
    return f"I have {english_number(n)} {objects[0]}.", f"J'ai {french_number(n)} {objects[1]}."


def describe(animal: str) -> str:
    legs, home, food, sound = ANIMALS[animal]
    legs_text = "has no legs" if legs == "no" else f"has {legs} legs"
    return (f"The {animal} is an animal that {legs_text}. It lives in {home} and eats {food}. "
            f"When it wants attention, the {animal} {sound}.")


def record(instruction: str, output: str, input_: str = "") -> dict:
    return {"instruction": instruction, "input": input_, "output": output}


def training_records(rng: random.Random) -> list[dict]:
    records = []
    for n in range(2, 100):
        english, french = sentence_pair(n, OBJECTS[n % len(OBJECTS)])
        records.append(record("Translate the following from English to French", french, english))
        if n % 2 == 0:
            records.append(record("Translate the following from French to English", english, french))
    for country, capital in CAPITALS.items():
        records.append(record(f"What is the capital of {country}?", f"The capital of {country} is {capital}."))
    for word, opposite in OPPOSITES:
        records.append(record("Give the opposite of the word.", opposite, word))
        records.append(record(f"What is the opposite of {opposite}?", word))
    for _ in range(40):
        a, b = rng.randint(0, 50), rng.randint(0, 49)
        records.append(record("Add the two numbers.", str(a + b), f"{a} + {b}"))
    for _ in range(30):
        numbers = rng.sample(range(1, 60), rng.randint(3, 6))
        records.append(record("Sort the numbers in ascending order.", ", ".join(map(str, sorted(numbers))),
                              ", ".join(map(str, numbers))))
    for animal in ANIMALS:
        records.append(record("Describe the animal in a few sentences.", describe(animal), animal))
        records.append(record(f"Tell me about the {animal}.", describe(animal)))
    rng.shuffle(records)
    return records


def capitals_items(rng: random.Random) -> list[dict]:
    items = []
    for country, capital in CAPITALS.items():
        distractors = rng.sample([c for c in CAPITALS.values() if c != capital], 3)
        choices = distractors + [capital]
        rng.shuffle(choices)
        items.append({"question": f"What is the capital of {country}?", "country": country, "choices": choices,
                      "label": choices.index(capital)})
    return items


def opposites_items(rng: random.Random) -> list[dict]:
    """WinoGrande's schema: the blank `_` is filled by option1 or option2; answer is "1" or "2"."""
    words = [w for pair in OPPOSITES for w in pair]
    items = []
    for word, opposite in OPPOSITES:
        distractor = rng.choice([w for w in words if w not in (word, opposite)])
        options = [opposite, distractor]
        rng.shuffle(options)
        items.append({"sentence": f"The opposite of {word} is _ for sure.", "option1": options[0],
                      "option2": options[1], "answer": str(options.index(opposite) + 1)})
    return items


def translation_items() -> list[dict]:
    """The upstream WMT datasets' schema: {"translation": {"en": ..., "fr": ...}}; object/number pairs unseen in
    training."""
    pairs = [sentence_pair(n, OBJECTS[(n + 1) % len(OBJECTS)]) for n in range(2, 100, 3)]
    return [{"translation": {"en": english, "fr": french}} for english, french in pairs]


def judged_items() -> list[dict]:
    """AlpacaEval's format; the instruction is a paraphrase of the training ones."""
    return [{"instruction": f"Write a few sentences about the {animal}.", "output": f"The {animal} is an animal.",
             "generator": "demo_reference", "dataset": "demo"} for animal in ANIMALS]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(0)
    records = training_records(rng)
    (HERE / "alpaca_demo.json").write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n",
                                           encoding="utf-8")
    items = HERE / "benchmark_items"
    items.mkdir(exist_ok=True)
    write_jsonl(items / "capitals.jsonl", capitals_items(rng))
    write_jsonl(items / "opposites.jsonl", opposites_items(rng))
    write_jsonl(items / "numbers_en_fr.jsonl", translation_items())
    (items / "descriptions_alpaca_eval.json").write_text(json.dumps(judged_items(), indent=1) + "\n", encoding="utf-8")
    print(f"{len(records)} training records; benchmark items in {items}")


if __name__ == "__main__":
    main()
