"""The babi task: short stories of people moving objects between places, and questions whose supporting facts are
known, in the manner of the bAbI tasks (Weston et al., 2015).

A story is a list of events, each one sentence::

    mary went to the kitchen . mary picked up the apple . john went to the garden . mary dropped the apple .

A person carries what they hold; an object is where it was dropped or where its holder is. The world is tracked
exactly while the story is told, and a question about its end state is asked:

====================  ==========================================  =============================================
``where_is``          ``where is the apple ?`` (or a person)       a place
``where_was_before``  ``where was mary before the garden ?``        the place before the (only) visit to a place
``carrying``          ``what is mary carrying ?``                  ``nothing`` or objects, sorted, ``" and "``
``yes_no``            ``is the apple in the office ?``              ``yes`` / ``no``
====================  ==========================================  =============================================

The **supporting facts** are the story sentences that determine the answer (the holder's pickup and last move for a
carried object, the two moves around a visit, ...); every story also holds at least one sentence that is not one.
The difficulty is the number of supporting facts.

A trace follows the decomposition of trace-based distillation into classification and information retrieval: a
sentence naming the question type, the supporting facts quoted from the story, then the answer:

=========  =========================================================================================================
teacher    ``This is a question about where something is . The story says : john went to the kitchen , john picked up
           the milk . The answer is kitchen .``
student    ``where now ; john picked up the milk ; john went to the kitchen ; answer kitchen`` (latest fact first)
=========  =========================================================================================================

Gold ``steps`` are ``(question_type, facts joined by " . ")``; :func:`check_trace` marks them as
``[category_correct, retrieval_correct]``. :func:`perturb_trace` writes the control trace with the category and the
facts wrong and the answer right.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from kdlens.config import StrictModel
from kdlens.tasks.text import (
    SPLITS,
    TraceCheck,
    answer_in,
    check_example,
    check_style,
    check_text,
    draw_split,
    normalize,
    parse_answer,
    split_sentences,
    strip_terminator,
)

__all__ = ["PEOPLE", "PLACES", "OBJECTS", "QUESTION_TYPES", "SPLITS", "BabiConfig", "BabiExample", "BabiTraceCheck",
           "check_trace", "make_split", "parse_answer", "perturb_trace", "write_trace"]

PEOPLE = ("mary", "john", "sandra", "daniel", "fred", "bill", "julie", "jeff")
PLACES = ("kitchen", "garden", "office", "bathroom", "bedroom", "hallway", "cellar", "park")
OBJECTS = ("apple", "football", "milk", "book", "key", "ball", "box", "cup")
QUESTION_TYPES = ("where_is", "where_was_before", "carrying", "yes_no")
CATEGORY_SENTENCES = {  # the teacher's classification sentence for each question type
    "where_is": "This is a question about where something is .",
    "where_was_before": "This is a question about where something was before .",
    "carrying": "This is a question about what someone is carrying .",
    "yes_no": "This is a yes or no question .",
}
CATEGORY_WORDS = {"where_is": "where now", "where_was_before": "where before", "carrying": "carrying",
                  "yes_no": "yes or no"}  # the student's
# a category sentence is one of these, whole (so an echoed question is not one); the type's own name is read too
_CATEGORY = {form: kind for kind in QUESTION_TYPES for form in (
    strip_terminator(normalize(CATEGORY_SENTENCES[kind])), CATEGORY_WORDS[kind], kind, kind.replace("_", " _ "))}
_FACT = re.compile(r"\b(\w+) (went to|picked up|dropped) the (\w+)\b")
EVENT_WEIGHTS = {"move": 0.5, "pickup": 0.3, "drop": 0.2}


class BabiConfig(StrictModel):
    """How stories are told: the first ``n_people`` of ``PEOPLE`` (likewise places, objects), a story length
    uniform in ``story_length`` (events), and a question type uniform over ``question_types``."""

    n_people: int = Field(4, ge=1, le=len(PEOPLE))
    n_places: int = Field(5, ge=2, le=len(PLACES))
    n_objects: int = Field(4, ge=1, le=len(OBJECTS))
    story_length: tuple[int, int] = (4, 10)
    question_types: tuple[Literal["where_is", "where_was_before", "carrying", "yes_no"], ...] = QUESTION_TYPES
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self):
        low, high = self.story_length
        if not 2 <= low <= high <= 50 or high < 4:
            raise ValueError(f"story_length must be (low, high) with 2 <= low <= high <= 50 and high >= 4 (room for "
                             f"supporting facts and a distractor), got {(low, high)}")
        if not self.question_types or len(set(self.question_types)) != len(self.question_types):
            raise ValueError(f"question_types must be distinct and not empty, got {self.question_types}")
        return self


@dataclass(frozen=True)
class BabiExample:
    """One story and question.

    Attributes
    ----------
    prompt : the story sentences, each closed by `` .``, then the question, e.g. ``"mary went to the kitchen .
        where is mary ?"``
    answer : a place, ``yes`` / ``no``, ``nothing``, or objects in alphabetical order joined by ``" and "``
    steps : gold intermediate steps ``(question_type, supporting facts joined by " . ")``
    difficulty : number of supporting facts
    question_type : one of ``QUESTION_TYPES``
    question : the question sentence, e.g. ``"where is mary ?"``
    story : the story sentences, without their closing `` .``
    supporting_facts : the distinct story sentences that determine the answer, in story order
    supporting_indices : their indices into ``story`` (a sentence said twice may support twice)
    """

    prompt: str
    answer: str
    steps: tuple[str, str]
    difficulty: int
    question_type: str
    question: str
    story: tuple[str, ...]
    supporting_facts: tuple[str, ...]
    supporting_indices: tuple[int, ...]


@dataclass
class BabiTraceCheck(TraceCheck):
    """A :class:`TraceCheck` whose two steps are named: ``steps_correct == [category_correct, retrieval_correct]``.

    Attributes
    ----------
    category : the question type the trace states (its first category sentence), or None
    category_correct : at least one category stated, and every one stated is the gold type
    quoted_facts : the story-shaped facts the trace quotes (normalised), in order
    retrieval_correct : every gold supporting fact quoted, and nothing else quoted
    """

    category: str | None
    category_correct: bool
    quoted_facts: list[str]
    retrieval_correct: bool


class _World:
    """The exact state of a story being told, with the sentence indices that establish each part of it."""

    def __init__(self, config: BabiConfig, rng: random.Random):
        self.rng = rng
        self.people, self.places = PEOPLE[: config.n_people], PLACES[: config.n_places]
        self.objects = OBJECTS[: config.n_objects]
        self.story: list[str] = []
        self.at: dict[str, tuple[str, int]] = {}  # person -> (place, index of their last move)
        self.holder: dict[str, tuple[str, int]] = {}  # held object -> (person, index of the pickup)
        self.dropped: dict[str, tuple[str, tuple[int, ...]]] = {}  # object -> (place, (mover's move, drop))
        self.history: dict[str, list[tuple[str, tuple[int, ...]]]] = {e: [] for e in self.people + self.objects}
        self.touched: dict[str, dict[str, int]] = {p: {} for p in self.people}  # person -> {object: last pick/drop}

    def place_of(self, thing: str) -> tuple[str, tuple[int, ...]] | None:
        """Where a person or object is now, and the sentence indices that say so; None when the story has not said."""
        if thing in self.at:
            place, move = self.at[thing]
            return place, (move,)
        if thing in self.holder:
            person, pickup = self.holder[thing]
            place, move = self.at[person]
            return place, tuple(sorted((move, pickup)))
        return self.dropped.get(thing)

    def step(self) -> None:
        i, rng = len(self.story), self.rng
        pickups = [(p, o) for o in self.objects if o not in self.holder for p in self.at
                   if o not in self.dropped or self.dropped[o][0] == self.at[p][0]]
        drops = [(person, o) for o, (person, _) in self.holder.items()]
        w_move, w_pickup = EVENT_WEIGHTS["move"], EVENT_WEIGHTS["pickup"] * bool(pickups)
        r = rng.random() * (w_move + w_pickup + EVENT_WEIGHTS["drop"] * bool(drops))
        kind = "move" if r < w_move else "pickup" if r < w_move + w_pickup else "drop"
        if kind == "move":
            person = rng.choice(self.people)
            here = self.at.get(person, (None, 0))[0]
            place = rng.choice([p for p in self.places if p != here])
            self.story.append(f"{person} went to the {place}")
            self.at[person] = (place, i)
            self.history[person].append((place, (i,)))
            for thing, (holder, pickup) in self.holder.items():
                if holder == person:
                    self.history[thing].append((place, (pickup, i)))
        elif kind == "pickup":
            person, thing = rng.choice(pickups)
            self.story.append(f"{person} picked up the {thing}")
            place, move = self.at[person]
            if self.dropped.pop(thing, None) is None:  # first seen: the object was where its finder is
                self.history[thing].append((place, (move, i)))
            self.holder[thing] = (person, i)
            self.touched[person][thing] = i
        else:
            person, thing = rng.choice(drops)
            self.story.append(f"{person} dropped the {thing}")
            del self.holder[thing]
            place, move = self.at[person]
            self.dropped[thing] = (place, (move, i))
            self.touched[person][thing] = i

    def ask(self, kind: str) -> tuple[str, str, tuple[int, ...]] | None:
        """(question, answer, supporting indices) of a question of ``kind`` about the world now, or None if none
        can be asked."""
        rng = self.rng
        name = {p: p for p in self.people} | {o: f"the {o}" for o in self.objects}
        located = [e for e in name if self.place_of(e) is not None]
        if kind in ("where_is", "yes_no") and located:
            thing = rng.choice(located)
            place, facts = self.place_of(thing)
            if kind == "where_is":
                return f"where is {name[thing]} ?", place, facts
            asked = place if rng.random() < 0.5 else rng.choice([p for p in self.places if p != place])
            return f"is {name[thing]} in the {asked} ?", "yes" if asked == place else "no", facts
        if kind == "where_was_before":
            visits = [(e, k) for e, history in self.history.items() for k in range(1, len(history))
                      if [place for place, _ in history].count(history[k][0]) == 1]
            if visits:
                thing, k = rng.choice(visits)
                (before, facts_before), (place, facts) = self.history[thing][k - 1: k + 1]
                return (f"where was {name[thing]} before the {place} ?", before,
                        tuple(sorted(set(facts_before + facts))))
        if kind == "carrying":
            people = [p for p in self.people if self.touched[p]]
            if people:
                person = rng.choice(people)
                held = sorted(o for o, (holder, _) in self.holder.items() if holder == person)
                facts = tuple(sorted(self.touched[person].values()))  # the last pickup or drop of each thing touched
                return f"what is {person} carrying ?", " and ".join(held) or "nothing", facts
        return None


def _draw(config: BabiConfig, rng: random.Random) -> BabiExample:
    kind = rng.choice(config.question_types)
    while True:  # a story that can answer `kind` and holds a distractor: found in a few tries
        world = _World(config, rng)
        for _ in range(rng.randint(*config.story_length)):
            world.step()
        asked = world.ask(kind)
        if asked is None:
            continue
        question, answer, indices = asked
        facts = tuple(dict.fromkeys(world.story[i] for i in indices))
        if not set(world.story) <= set(facts):
            break
    story = tuple(world.story)
    return BabiExample(prompt=" . ".join(story) + f" . {question}", answer=answer, steps=(kind, " . ".join(facts)),
                       difficulty=len(facts), question_type=kind, question=question, story=story,
                       supporting_facts=facts, supporting_indices=indices)


def make_split(config: BabiConfig | None = None, split: str = "train", n: int = 1000) -> list[BabiExample]:
    """Draw ``n`` stories and questions of ``split``, deterministically from ``config.seed``.

    Parameters
    ----------
    config : BabiConfig (defaults: 4 people, 5 places, 4 objects, 4 to 10 events, all four question types)
    split : "train" | "validation" | "test", each an independent seeded stream
    n : number of examples; the first ``k`` are the same whatever ``n`` is

    Returns
    -------
    list of ``n`` :class:`BabiExample`

    Examples
    --------
    >>> example = make_split(BabiConfig(story_length=(4, 4), question_types=("where_is",)), "test", 6)[5]
    >>> example.prompt
    'john went to the kitchen . john picked up the apple . john picked up the milk . john dropped the apple . where \
is the milk ?'
    >>> example.answer, example.supporting_facts
    ('kitchen', ('john went to the kitchen', 'john picked up the milk'))
    """
    config = config or BabiConfig()
    return draw_split("babi", lambda rng: _draw(config, rng), config.seed, split, n)


def write_trace(example: BabiExample, style: str = "teacher") -> str:
    """The gold trace of ``example``: the question type, the supporting facts, the answer.

    Parameters
    ----------
    example : BabiExample
    style : "teacher" (a category sentence, ``The story says : `` the facts in story order separated by `` , ``,
        then ``The answer is X .``) or "student" (the type in ``CATEGORY_WORDS``, each fact latest first,
        ``answer X``, all separated by `` ; ``)

    Returns
    -------
    str of space-separated words and punctuation tokens

    Examples
    --------
    >>> example = make_split(BabiConfig(story_length=(4, 4), question_types=("where_is",)), "test", 6)[5]
    >>> write_trace(example)
    'This is a question about where something is . The story says : john went to the kitchen , john picked up the \
milk . The answer is kitchen .'
    >>> write_trace(example, "student")
    'where now ; john picked up the milk ; john went to the kitchen ; answer kitchen'
    """
    check_example(example, BabiExample)
    return _write(example.question_type, example.supporting_facts, example.answer, check_style(style))


def _write(kind: str, facts: tuple[str, ...], answer: str, style: str) -> str:
    if style == "student":
        return " ; ".join([CATEGORY_WORDS[kind], *reversed(facts), f"answer {answer}"])
    return f"{CATEGORY_SENTENCES[kind]} The story says : {' , '.join(facts)} . The answer is {answer} ."


def perturb_trace(example: BabiExample, rng: random.Random | int = 0, style: str = "teacher") -> str:
    """The perturbed-trace control: a wrong category, story facts that do not support the answer, the gold answer.

    The category is drawn from the other question types; the facts are as many distinct non-supporting story
    sentences as there are supporting facts (fewer when the story has fewer). :func:`check_trace` on the result
    says category wrong, retrieval wrong, answer right.

    Parameters
    ----------
    example : BabiExample
    rng : random.Random or int seed
    style : "teacher" | "student", as in :func:`write_trace`

    Examples
    --------
    >>> example = make_split(BabiConfig(), "test", 1)[0]
    >>> check = check_trace(example, perturb_trace(example, 0))
    >>> check.category_correct, check.retrieval_correct, check.answer_correct
    (False, False, True)
    """
    check_example(example, BabiExample)
    check_style(style)
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    kind = rng.choice([k for k in QUESTION_TYPES if k != example.question_type])
    others = sorted(set(example.story) - set(example.supporting_facts), key=example.story.index)
    facts = sorted(rng.sample(others, min(len(others), len(example.supporting_facts))), key=example.story.index)
    return _write(kind, tuple(facts), example.answer, style)


def check_trace(example: BabiExample, text: str) -> BabiTraceCheck:
    """Check a trace of either style (or any model output) against ``example``; never raises on a string.

    A *category sentence* is, whole, the teacher's sentence for a type, the student's words for it or its name;
    a *fact* is a story-shaped clause (``<name> went to the <place>``, ``picked up the``, ``dropped the``) anywhere
    in a sentence. Category sentences are right when they name the gold type; sentences quoting facts are right
    when every fact they quote is a gold supporting fact; answer sentences and others count as None.

    Parameters
    ----------
    example : BabiExample
    text : the generated trace

    Returns
    -------
    BabiTraceCheck with ``steps_correct == [category_correct, retrieval_correct]``

    Examples
    --------
    >>> example = make_split(BabiConfig(), "test", 1)[0]
    >>> check = check_trace(example, write_trace(example, "student"))
    >>> check.steps_correct, check.answer, check.sentence_correct
    ([True, True], 'milk', [True, True, None])
    """
    check_example(example, BabiExample)
    sentences, spans = split_sentences(check_text(text))
    gold = set(example.supporting_facts)
    categories, quoted, sentence_correct = [], [], []
    answer = None
    for sentence in sentences:
        words = normalize(sentence)
        given = answer_in(words)
        answer = given or answer
        core = strip_terminator(words)
        kind = _CATEGORY.get(core)
        facts = [" ".join((who, verb, "the", what)) for who, verb, what in _FACT.findall(core)]
        if given is not None:
            sentence_correct.append(None)
        elif kind is not None:
            categories.append(kind)
            sentence_correct.append(kind == example.question_type)
        elif facts:
            quoted.extend(facts)
            sentence_correct.append(all(f in gold for f in facts))
        else:
            sentence_correct.append(None)
    category_correct = bool(categories) and all(k == example.question_type for k in categories)
    retrieval_correct = set(quoted) == gold
    return BabiTraceCheck(
        steps_correct=[category_correct, retrieval_correct],
        trace_correct=category_correct and retrieval_correct and False not in sentence_correct,
        answer=answer, answer_correct=answer == example.answer, sentences=sentences, spans=spans,
        sentence_correct=sentence_correct, category=categories[0] if categories else None,
        category_correct=category_correct, quoted_facts=quoted, retrieval_correct=retrieval_correct)
