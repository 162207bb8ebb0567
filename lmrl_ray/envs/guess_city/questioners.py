"""The scripted Guess My City questioners: the expert, the data behaviour and a random one.

They read only the dialogue and the public table: they keep the set of cities
consistent with the answers so far, by asking the oracle's public rules what each
remaining city would have answered (`CandidateTracker`). `InformationGainQuestioner`
(the expert, the normalisation maximum) asks the question whose answer best splits the
remaining cities and guesses when at most two are left; `QuestionerMixture` (the data
behaviour) plays one of several styles per episode, from near-optimal to weak
questioners and early guessers; `RandomQuestioner` asks random questions and makes
random guesses. Every question is asked in one of the bank's phrasings (`phrasings`).

Each city's landmark and dish are its own, so the expert's first question is nearly
always "What is a famous landmark?" or "What food is it known for?", and its second
the right guess: its mean return is -1, the best possible, where the paper's maximum
was -8.56 (an LM questioner's). The normalised score of this task is therefore on a
different scale from the paper's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmrl_ray.envs.base import ScriptedPolicy, TextEnv, Turn
from lmrl_ray.envs.guess_city.cities import CLIMATES, CONTINENTS, City, table
from lmrl_ray.envs.guess_city.oracle import answer
from lmrl_ray.envs.guess_city.reader import Query, parse

# -- The question bank ---------------------------------------------------------------

OPEN_QUESTIONS = {
    "continent": ("What continent is your city on?", "Which continent is it in?", "What continent are you from?"),
    "subregion": ("What part of the world is your city in?", "Which region of the world is it in?",
                  "Where in the world is it, roughly?"),
    "hemisphere": ("Which hemisphere is your city in?", "Which hemispheres is it in?",
                   "Is it north or south of the equator, and east or west of Greenwich?"),
    "coast": ("Is your city on the coast?", "Is it near the sea?", "Is it a coastal city?"),
    "river": ("Is there a river running through your city?", "What river is your city on?", "Is it on a river?"),
    "climate": ("What is the weather like there?", "What's the climate like in your city?",
                "How would you describe the climate?"),
    "language": ("What language do people speak there?", "What do people speak in your city?",
                 "What is the main language there?"),
    "food": ("What food is your city known for?", "What is a famous dish from your city?",
             "What should I eat if I visit?"),
    "landmark": ("What is a famous landmark there?", "What's a well-known sight in your city?",
                 "What should a tourist go and see there?"),
    "capital": ("Is your city a capital?", "Is it the capital of its country?", "Is it a capital city?"),
    "population": ("How many people live there?", "What is the population of your city?", "How big is your city?"),
    "province": ("What state or province is your city in?", "Which province or state is it in?",
                 "What region of the country is it in?"),
    "timezone": ("What time zone is your city in?", "What is the UTC offset there?", "Which time zone do you use?"),
    "currency": ("What currency do they use there?", "What money do people pay with?", "What is the local currency?"),
    "sport": ("What sport is popular there?", "What is the most popular sport in your city?",
              "Which sport do people love there?"),
    "industry": ("What industry is your city known for?", "What is the local economy based on?",
                 "What do people work in there?"),
    "nickname": ("Does your city have a nickname?", "What is your city's nickname?",
                 "Is there a nickname for your city?"),
}
YES_NO_QUESTIONS = {
    "continent": ("Is your city in {v}?", "Is it in {v}?", "Is it located in {v}?"),
    "subregion": ("Is your city in {v}?", "Is it in {v}?", "Is it located in {v}?"),
    "hemisphere": ("Is it in the {v} hemisphere?", "Is your city in the {v} hemisphere?"),
    "country": ("Is your city in {v}?", "Is it in {v}?"),
    "province": ("Is your city in {v}?", "Is it in {v}?"),
    "language": ("Do people speak {v} there?", "Is {v} spoken in your city?", "Do they speak {v}?"),
    "river": ("Is your city on {v}?", "Does {v} run through it?"),
    "coast": ("Is it on {v}?", "Is your city by {v}?"),
    "climate": ("Is the climate there {v}?", "Would you call the climate {v}?"),
    "currency": ("Do they pay with the {v} there?", "Is the local currency the {v}?"),
    "sport": ("Is {v} popular there?", "Do people there love {v}?"),
    "food": ("Is your city known for {v}?", "Is {v} a local speciality there?"),
    "landmark": ("Is {v} in your city?", "Can I visit {v} there?"),
    "population": ("Do more than {v} million people live there?", "Is the population over {v} million?"),
}
# Values of yes/no questions that are not read off the table: hemispheres, and the
# population thresholds asked about ("Do more than 10 million people live there?").
HEMISPHERES = ("northern", "southern", "eastern", "western")
POPULATION_THRESHOLDS = (5, 10, 15, 20)
# Small talk the oracle cannot ground: weak questioners ask it now and then.
OFF_TOPIC = (
    "Do you like living there?", "How long have you lived there?", "What do you do for fun?",
    "Are the people friendly?", "Is it a nice place?", "What is your favourite thing about it?",
)
_WITH_ARTICLE = {"United States", "United Kingdom", "Philippines", "Democratic Republic of the Congo"}


def guess_question(city: City) -> str:
    return f"Is the city you are from {city.name}?"


def _yes_no_values(intent: str) -> list[Any]:
    cities = table().cities
    if intent == "continent":
        return list(CONTINENTS)
    if intent == "hemisphere":
        return list(HEMISPHERES)
    if intent == "climate":
        return list(CLIMATES)
    if intent == "population":
        return [("more", n) for n in POPULATION_THRESHOLDS]
    attribute = {"coast": "water"}.get(intent, intent)
    if intent == "language":
        values = [lang for c in cities for lang in c.languages]
    else:
        values = [getattr(c, attribute) for c in cities]
    return list(dict.fromkeys(v for v in values if v is not None))


def _say(intent: str, value: Any) -> str:
    """A value as a question says it."""
    if intent == "population":
        return str(value[1])
    if intent == "country" and value in _WITH_ARTICLE:
        return "the " + value
    if intent == "climate" and value == "mediterranean":
        return "Mediterranean"
    return value


def phrasings(query: Query) -> tuple[str, ...]:
    """The ways the questioners ask `query`."""
    if query.value is None:
        return OPEN_QUESTIONS[query.intent]
    return tuple(t.format(v=_say(query.intent, query.value)) for t in YES_NO_QUESTIONS[query.intent])


@functools.lru_cache(maxsize=None)
def question_bank() -> tuple[Query, ...]:
    """Every question the scripted questioners ask: each topic's open question and a
    yes/no question about each value in the table. A value whose question the oracle
    would read as another topic ("Is your city on the Congo?" is about the country) is
    left out."""
    bank = [Query(intent) for intent in OPEN_QUESTIONS]
    for intent in YES_NO_QUESTIONS:
        for value in _yes_no_values(intent):
            query = Query(intent, value)
            if all(parse(text) == query for text in phrasings(query)):
                bank.append(query)
    return tuple(bank)


# -- What the dialogue says about the hidden city --------------------------------------


@functools.lru_cache(maxsize=None)
def answer_partition(query: Query) -> tuple[np.ndarray, dict[str, int]]:
    """Which cities give the same answer to `query`: (answer id per city, in table
    order; any phrasing of an answer -> its id). Built from the oracle's public rules."""
    ids, lookup, canon = [], {}, {}
    for city in table().cities:
        variants = answer(city, query)
        k = canon.setdefault(variants[0], len(canon))
        ids.append(k)
        for text in variants:
            lookup[text] = k
    return np.asarray(ids), lookup


@functools.lru_cache(maxsize=None)
def _bank_matrix() -> tuple[np.ndarray, np.ndarray]:
    """(answer ids of the bank's questions with a distinct range per question, (Q, N);
    the first id of each question's range, (Q,)) for scoring many questions at once."""
    rows, starts, offset = [], [], 0
    for query in question_bank():
        ids, _ = answer_partition(query)
        rows.append(ids + offset)
        starts.append(offset)
        offset += int(ids.max()) + 1
    return np.stack(rows), np.asarray(starts)


class CandidateTracker:
    """The cities still consistent with the dialogue: after each question, the cities
    whose answer (by the grounded oracle's rules) differs from the one given are struck
    out. An answer those rules cannot give (another simulator's) strikes out nothing."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.alive = np.ones(len(table().cities), dtype=bool)
        self.read = 1  # transcript turns read so far (the first is the observation)

    def update(self, transcript: list[Turn]) -> np.ndarray:
        """Read the new (question, answer) pairs; returns the indices of the candidates."""
        if len(transcript) < self.read:
            self.reset()
        i = self.read
        while i + 1 < len(transcript):
            ids, lookup = answer_partition(parse(transcript[i].text))
            given = lookup.get(transcript[i + 1].text)
            if given is not None:
                self.alive &= ids == given
            i += 2
        self.read = i
        return np.flatnonzero(self.alive)


def most_informative(candidates: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> Query | None:
    """The bank question (among `rows`) whose answer splits `candidates` best: the one
    with the least expected entropy left, sum_a (n_a/n) log n_a; ties drawn at random.
    None when no question in `rows` tells any of the candidates apart."""
    matrix, starts = _bank_matrix()
    counts = np.bincount(matrix[rows][:, candidates].ravel(), minlength=int(matrix.max()) + 1)
    weighted = counts * np.log(np.maximum(counts, 1))
    score = np.add.reduceat(weighted, starts)[rows]
    useful = score < len(candidates) * np.log(len(candidates)) - 1e-9
    if not useful.any():
        return None
    best = np.flatnonzero(useful & (score <= score[useful].min() + 1e-9))
    return question_bank()[int(rows[best[int(rng.integers(len(best)))]])]


def _pick(items, rng: np.random.Generator):
    return items[int(rng.integers(len(items)))]


# -- Scripted questioners --------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """How a scripted questioner plays."""

    name: str
    skill: float
    """Probability of asking the most informative question; otherwise a random one."""
    topics: frozenset[str] | None = None
    """The topics (intents) it asks about; None: all of them."""
    open_questions: bool = True
    """Whether it asks open questions; if not, only yes/no ones."""
    guess_at: int = 2
    """It guesses once at most this many candidate cities remain..."""
    first_guess_turn: int = 1
    """...but not before this turn (1-based): a cautious player keeps confirming."""
    final_guesses: int = 1
    """Turns at the end spent guessing among the candidates, however many remain."""
    off_topic: float = 0.0
    """Probability of small talk the oracle cannot ground."""
    repeat: float = 0.0
    """Probability of asking one of its earlier questions again."""


EXPERT = Style("expert", skill=1.0)


class Questioner(ScriptedPolicy):
    """A scripted questioner playing one `Style`. It reads only the dialogue and the
    public table (through `CandidateTracker`), never the hidden city."""

    def __init__(self, style: Style = EXPERT):
        self.style = style
        bank = question_bank()
        self.rows = np.asarray([
            i for i, q in enumerate(bank)
            if (style.topics is None or q.intent in style.topics) and (style.open_questions or q.value is not None)
        ])
        self.by_topic: dict[str, list[Query]] = {}
        for i in self.rows:
            self.by_topic.setdefault(bank[i].intent, []).append(bank[i])
        self.tracker = CandidateTracker()
        self.asked: list[Query] = []

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        self.tracker.reset()
        self.asked = []

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        style, cities = self.style, table().cities
        candidates = self.tracker.update(env.transcript)
        turn = env.agent_turns + 1
        if len(candidates) == 0:  # only if the dialogue contradicts the table
            candidates = np.arange(len(cities))
        sure = len(candidates) <= style.guess_at and turn >= style.first_guess_turn
        if sure or env.max_agent_turns - turn < style.final_guesses:
            return guess_question(cities[int(_pick(candidates, rng))])
        if rng.random() < style.off_topic:
            return _pick(OFF_TOPIC, rng)
        query = None
        if self.asked and rng.random() < style.repeat:
            query = _pick(self.asked, rng)
        elif rng.random() < style.skill:
            query = most_informative(candidates, self.rows, rng)
        if query is None:
            query = _pick(self.by_topic[_pick(list(self.by_topic), rng)], rng)
        self.asked.append(query)
        return _pick(phrasings(query), rng)


class InformationGainQuestioner(Questioner):
    """The expert: always the most informative question; guesses when at most two
    cities remain (guessing then costs no more than asking, on average)."""

    def __init__(self) -> None:
        super().__init__(EXPERT)


# Topics whose open question all but names the city (each city's landmark, food,
# nickname and industry are its own): weaker players do not think of them.
GIVEAWAY_TOPICS = frozenset({"landmark", "food", "nickname", "industry"})
_PLAIN_TOPICS = frozenset(OPEN_QUESTIONS) - GIVEAWAY_TOPICS

# The data behaviour's styles and their weights, tuned so that the mixture's success
# rate and mean return are near the paper's Table 1 (0.53 and -18.8 over 20 questions,
# which needs long episodes: most players keep asking until late before they guess).
# Thorough: good questions, but confirms until turn 17. Careful: plain topics, uses all
# twenty questions. Yes-no player: random yes/no questions, as in Twenty Questions.
# Wanderer: random plain questions, small talk and repeats. Early guesser: starts
# guessing at turn 4 among up to 40 candidates.
MIXTURE_STYLES = (
    (0.08, Style("thorough", skill=0.6, guess_at=1, first_guess_turn=17, off_topic=0.02, repeat=0.05)),
    (0.15, Style("careful", skill=0.3, topics=_PLAIN_TOPICS, guess_at=1, first_guess_turn=20,
                 off_topic=0.03, repeat=0.05)),
    (0.54, Style("yes-no player", skill=0.0, open_questions=False, guess_at=1, first_guess_turn=12,
                 final_guesses=2, off_topic=0.05, repeat=0.1)),
    (0.15, Style("wanderer", skill=0.0, topics=_PLAIN_TOPICS, guess_at=1, first_guess_turn=14,
                 off_topic=0.08, repeat=0.2)),
    (0.08, Style("early guesser", skill=0.1, open_questions=False, guess_at=40, first_guess_turn=4,
                 off_topic=0.02)),
)


class QuestionerMixture(ScriptedPolicy):
    """The data behaviour: each episode plays one of `MIXTURE_STYLES`, drawn by weight."""

    def __init__(self) -> None:
        weights = np.asarray([w for w, _ in MIXTURE_STYLES])
        self.weights = weights / weights.sum()
        self.players = [Questioner(style) for _, style in MIXTURE_STYLES]
        self.player = self.players[0]

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        self.player = self.players[int(rng.choice(len(self.players), p=self.weights))]
        self.player.reset(env, rng)

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        return self.player.act(env, rng)


class RandomQuestioner(ScriptedPolicy):
    """Random questions from the bank (a random topic, then a random value and phrasing);
    one turn in ten a guess of a random city. Reads nothing."""

    guess_probability = 0.1

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        if rng.random() < self.guess_probability:
            return guess_question(_pick(table().cities, rng))
        topics = _topics()
        return _pick(phrasings(_pick(topics[_pick(list(topics), rng)], rng)), rng)


@functools.lru_cache(maxsize=None)
def _topics() -> dict[str, list[Query]]:
    topics: dict[str, list[Query]] = {}
    for query in question_bank():
        topics.setdefault(query.intent, []).append(query)
    return topics
