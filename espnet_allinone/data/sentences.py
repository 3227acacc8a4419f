"""A deterministic generator of varied English sentences (about 600 words).

Sentences are drawn from ~30 templates whose slots take words from open classes
(nouns, verbs, adjectives, adverbs, names, places, times, numbers), so the corpus has a
real vocabulary and word combinations rarely repeat.
"""

import random
from typing import Iterator, List, Set

NOUNS = """
apple table window garden teacher doctor letter river mountain bottle kitchen student
computer phone picture camera bicycle engine flower forest island village market
library museum hospital station airport bridge castle church factory office school
theatre ticket jacket shirt basket blanket bucket candle carpet pencil pocket wallet
umbrella violin guitar piano drum song story poem novel newspaper magazine message
question answer problem reason method result record report sample signal system
machine network model number voice sound noise music silence weather winter summer
autumn spring morning evening night storm cloud rain snow wind sun moon star planet
ocean lake valley desert field farm horse rabbit tiger monkey eagle dolphin turtle
spider chicken cow sheep goat dog cat bird fish lion bear wolf fox mouse
breakfast dinner lunch coffee sugar butter cheese bread soup salad lemon orange
potato tomato carrot onion rice chocolate cake cookie honey pepper salt water milk
captain pilot farmer baker driver singer painter writer lawyer nurse soldier sailor
neighbour cousin friend brother sister uncle aunt parent child baby family crowd
road street corner garage roof floor door wall stairs tower tunnel harbour beach
""".split()

VERBS = """
find open close carry paint build clean cook fix move watch visit call help answer
follow measure repair deliver borrow check collect describe explain finish order
""".split()
VERBS_PAST = """
found opened closed carried painted built cleaned cooked fixed moved watched visited
called helped answered followed measured repaired delivered borrowed checked collected
described explained finished ordered
""".split()
VERBS_ING = """
finding opening closing carrying painting building cleaning cooking fixing moving
watching visiting calling helping answering following measuring repairing delivering
borrowing checking collecting describing explaining finishing ordering
""".split()
INTRANSITIVE_PAST = """
arrived laughed slept waited danced smiled jumped travelled returned disappeared
listened shouted whispered complained agreed hesitated stumbled wandered
""".split()

ADJECTIVES = """
red blue green yellow black white golden silver bright dark small large tiny huge
heavy light quiet loud early late cheap expensive fresh famous strange simple
careful clever gentle honest lucky nervous polite proud brave calm eager friendly
happy hungry sleepy tired angry busy empty full broken hidden modern ancient narrow
wide warm cold wet dry soft hard sweet bitter smooth rough clean dirty rare common
""".split()
ADVERBS = """
quickly slowly quietly loudly carefully suddenly finally usually rarely often
always never gently happily badly easily nearly almost really certainly
""".split()

NAMES = """
anna ben clara david emma frank grace henry irene jack kate leo maria nick olivia
peter rachel sam tina victor william zoe robert linda george helen thomas lucy
martin susan oscar julia edward diana simon laura daniel sophie james alice
""".split()
PLACES = """
london paris berlin tokyo madrid rome vienna dublin oslo cairo sydney boston
chicago toronto denver lisbon prague athens warsaw seattle
""".split()
TIMES = [
    "today", "yesterday", "tomorrow", "tonight", "this morning", "last night",
    "next week", "on monday", "on tuesday", "on friday", "after lunch",
    "before dinner", "every day", "at noon", "in the evening", "last year", "next month",
]
NUMBERS = """
two three four five six seven eight nine ten eleven twelve fifteen twenty thirty
forty fifty hundred
""".split()
PREPOSITIONS = "on under behind near beside inside above below across around".split()

TEMPLATES = [
    "the {adj} {noun} is {prep} the {noun}",
    "{name} {vpast} the {adj} {noun} {time}",
    "please {verb} the {noun} {adv}",
    "did you {verb} the {noun} {prep} the {noun}",
    "{name} and {name} {ipast} {adv}",
    "i think the {noun} is too {adj}",
    "we {vpast} {number} {noun}s in {place}",
    "the {noun} {ipast} {prep} the {adj} {noun}",
    "{name} is {ving} the {noun} for the {noun}",
    "could you {verb} my {adj} {noun} {time}",
    "there are {number} {adj} {noun}s {prep} the {noun}",
    "my {noun} {ipast} when the {noun} {ipast}",
    "{name} {adv} {vpast} a {adj} {noun}",
    "they will {verb} the {noun} in {place} {time}",
    "why is the {noun} so {adj}",
    "the {noun} from {place} was {adj} and {adj}",
    "{name} said the {noun} is {adj}",
    "how many {noun}s did {name} {verb}",
    "a {adj} {noun} {ipast} {time}",
    "we were {ving} the {noun} {adv}",
    "{name} never {vpast} the {noun} {prep} the {noun}",
    "the {noun} and the {noun} are {adj}",
    "my {noun} lives in {place} with {number} {noun}s",
    "she {vpast} the {noun} and {ipast}",
    "he was {adj} because the {noun} was {adj}",
    "put the {adj} {noun} {prep} the {noun} please",
    "{time} {name} {vpast} the {noun}",
    "the {adj} {noun} {vpast} the {noun} {adv}",
    "is the {noun} {prep} the {noun} or {prep} the {noun}",
    "you should {verb} the {noun} before the {noun}",
]

SLOTS = {
    "noun": NOUNS, "verb": VERBS, "vpast": VERBS_PAST, "ving": VERBS_ING,
    "ipast": INTRANSITIVE_PAST, "adj": ADJECTIVES, "adv": ADVERBS, "name": NAMES,
    "place": PLACES, "time": TIMES, "number": NUMBERS, "prep": PREPOSITIONS,
}


def vocabulary() -> Set[str]:
    words = set()
    for values in SLOTS.values():
        for v in values:
            words.update(v.split())
    for t in TEMPLATES:
        words.update(w for w in t.replace("{", " {").split() if not w.startswith("{"))
    words.update(n + "s" for n in NOUNS)
    return words


def sentence(rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    out, rest = [], template
    while "{" in rest:
        head, rest = rest.split("{", 1)
        slot, rest = rest.split("}", 1)
        out.append(head)
        out.append(rng.choice(SLOTS[slot]))
    out.append(rest)
    return " ".join("".join(out).split())


def unique_sentences(n: int, seed: int, exclude: Set[str] = frozenset()) -> List[str]:
    """``n`` distinct sentences, none in ``exclude``; deterministic for ``seed``."""
    rng = random.Random(seed)
    seen: Set[str] = set(exclude)
    out: List[str] = []
    tries = 0
    while len(out) < n:
        s = sentence(rng)
        tries += 1
        if tries > 100 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct sentences")
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def iter_sentences(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    while True:
        yield sentence(rng)
