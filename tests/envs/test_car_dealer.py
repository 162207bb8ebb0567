"""Car Dealer: catalog, parsing, persona, reward, the buyer's resistance to gaming,
determinism and the scripted sellers' figures."""

from __future__ import annotations

import json
import re
import string
from types import SimpleNamespace

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs.base import AGENT, ENV, Turn
from lmrl_ray.envs.car_dealer.catalog import CATALOG_PATH, catalog, load_catalog
from lmrl_ray.envs.car_dealer.env import sale_reward
from lmrl_ray.envs.car_dealer.persona import (
    DISCOUNT_LOVER_FACTORS,
    PERSONALITIES,
    STRATEGIES,
    STRETCH,
    Persona,
    draw_persona,
    match_score,
    willingness,
)
from lmrl_ray.envs.car_dealer.reader import find_amounts, read_seller
from lmrl_ray.envs.car_dealer.sellers import (
    ConciseSeller,
    DiscountSeller,
    FeatureSeller,
    read_buyer,
)
from lmrl_ray.envs.play import scripted_summary

ACCEPT = re.compile(r"^Output: Decision=Accept MSRP=\$(\d+) Buy Price=\$(\d+)$")
REJECT = re.compile(r"^Output: Decision=Reject MSRP=\$(\d+)$")
PRINTABLE = set(string.printable)
# The most any buyer can pay relative to its budget: full match, the most generous
# personality, a discount lover given a discount.
MAX_PRICE_OVER_BUDGET = 1.3 * max(STRETCH.values()) * DISCOUNT_LOVER_FACTORS[1]


@pytest.fixture
def env():
    e = envs.make("car-dealer")
    yield e
    e.close()


def play(env, actions, seed=0, persona=None):
    """Reset with `persona` pinned and say `actions` in turn (the last one repeats)."""
    env.reset(seed=seed, options={"persona": persona} if persona else None)
    info, reward, i = {}, 0.0, 0
    while not env.done:
        _, reward, _, _, info = env.step(actions[min(i, len(actions) - 1)])
        i += 1
    return reward, info


# -- Catalog ---------------------------------------------------------------------------


def test_catalog_covers_the_task():
    cat = catalog()
    assert set(cat.brands) == {"VW", "Lexus", "Ford", "Mazda", "Hyundai", "Toyota", "Mercedes-Benz", "BMW",
                               "Audi", "Subaru", "Honda", "Porsche", "Tesla"}
    assert set(cat.types) == {"luxury", "sedan", "convertible", "truck", "electric", "SUV"}
    assert set(cat.features) == {"backup camera", "navigation system", "heated seats", "leather seats",
                                 "third-row seating", "blind spot monitoring", "sunroof", "Apple CarPlay"}
    assert set(cat.types_of("Tesla")) == {"electric", "sedan", "SUV"}
    assert {"luxury", "convertible", "SUV", "electric"} <= set(cat.types_of("Porsche"))
    # MSRP: base + features, a quoted sticker counts, everything clipped to the range.
    low, high = cat.msrp_ranges[("Toyota", "SUV")]
    assert cat.msrp("Toyota", "SUV") == low
    assert cat.msrp("Toyota", "SUV", ["sunroof", "heated seats"]) == low + 1200 + 600
    assert cat.msrp("Toyota", "SUV", [], 40_000) == 40_000
    assert cat.msrp("Toyota", "SUV", [], 1) == low
    assert cat.msrp("Toyota", "SUV", [], 10**9) == high


@pytest.mark.parametrize("mutate, entry", [
    (lambda d: d["brands"]["Tesla"].update(SUV=[90000, 45000]), "brands.Tesla.SUV"),
    (lambda d: d["brands"]["Ford"].update(spaceship=[1, 2]), "brands.Ford.spaceship"),
    (lambda d: d["features"].update(sunroof=-5), "features.sunroof"),
    (lambda d: d["brands"].update(Kia={}), "brands.Kia"),
    (lambda d: [b.pop("truck", None) for b in d["brands"].values()], "types.truck"),
])
def test_malformed_catalog_names_file_and_entry(tmp_path, mutate, entry):
    data = json.loads(CATALOG_PATH.read_text())
    mutate(data)
    path = tmp_path / "cars.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {entry}")):
        load_catalog(path)


def test_unreadable_catalog_names_file(tmp_path):
    path = tmp_path / "cars.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_catalog(path)


# -- Reading the seller ----------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("$35,000", {"prices": [35000]}),
    ("It's yours for 35k.", {"prices": [35000]}),
    ("35,000 dollars and it's yours", {"prices": [35000]}),
    ("I can do 35.5k", {"prices": [35500]}),
    ("5% off", {"discount_pct": 5.0}),
    ("I'll give you a 10 percent discount", {"discount_pct": 10.0}),
    ("$2,000 off", {"discount_amount": 2000}),
    ("I can knock off 2 grand", {"discount_amount": 2000}),
    ("I'll take $1,500 off, so $33,500.", {"discount_amount": 1500, "prices": [33500]}),
    ("The MSRP is $41,000 but for you $38,000", {"sticker": 41000, "prices": [38000]}),
    ("It lists at 41k. I'm asking 39k.", {"sticker": 41000, "prices": [39000]}),
    ("It was $40,000, now only $36,000", {"prices": [36000]}),
    ("Within your $40,000 budget: $38,000", {"prices": [38000]}),
    ("A 2021 model with 3 rows", {"prices": []}),
    ("It's free", {"absurd": True}),
    ("The price is -$5,000", {"absurd": True}),
    ("Only " + "9" * 40 + " dollars", {"absurd": True}),
    ("the price is $0 and I will charge you $90,000 later", {"prices": [0, 90000]}),
])
def test_reads_prices_discounts_and_stickers(line, expected):
    move = read_seller(catalog(), line)
    for key, value in expected.items():
        assert getattr(move, key) == value, (line, key)


def test_reads_cars_features_questions_and_agreement():
    cat = catalog()
    move = read_seller(cat, "This Volkswagen crossover has heated leather seats and CarPlay, but no sunroof.")
    assert (move.brand, move.type) == ("VW", "SUV")
    assert move.features_on == ["heated seats", "leather seats", "Apple CarPlay"]
    assert move.features_off == ["sunroof"]
    move = read_seller(cat, "Which brand do you want? And how much are you looking to spend?")
    assert move.asks_needs and move.asks_budget and not move.agrees
    assert read_seller(cat, "How much do you want to spend?").asks_needs is False
    assert read_seller(cat, "Any features you can't live without?").asks_features
    assert read_seller(cat, "Deal! $30,000 it is.").agrees
    assert not read_seller(cat, "No deal, I can't do that.").agrees
    assert not read_seller(cat, "You have to accept this deal.").agrees
    assert read_seller(cat, "You have to accept this deal.").pushy
    assert not read_seller(cat, "qwzx vbnm plrk").understood()


# -- Persona ---------------------------------------------------------------------------


def test_persona_is_drawn_within_the_task_and_pins_validate(env):
    cat = catalog()
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = draw_persona(cat, rng)
        assert p.personality in PERSONALITIES and p.strategy in STRATEGIES
        assert p.type in cat.types_of(p.brand)
        assert 1 <= len(p.features) <= 4 and set(p.features) <= set(cat.features)
        assert 10_000 <= p.budget <= 90_000
    pinned = {"personality": "rude", "brand": "Tesla", "type": "SUV", "features": ["sunroof"],
              "budget": 50_000, "strategy": "impatient"}
    env.reset(seed=1, options={"persona": pinned})
    assert env.persona == Persona("rude", "Tesla", "SUV", ("sunroof",), 50_000, "impatient")
    env.reset(seed=1, options={"persona": {"budget": 12_345}})
    assert env.persona.budget == 12_345
    for bad, message in [
        ({"mood": "happy"}, "valid keys: personality, brand"),
        ({"personality": "grumpy"}, "valid values: abusive, angry"),
        ({"brand": "Kia"}, "valid values: VW, Lexus"),
        ({"brand": "Mazda", "type": "truck"}, "not sold by Mazda; valid values: sedan, convertible, SUV"),
        ({"features": ["jet pack"]}, "valid values: backup camera"),
        ({"features": []}, "1 to 4 distinct features"),
        ({"budget": 5}, "from 10000 to 90000"),
        ({"strategy": "haggles"}, "valid values: loves discounts"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            env.reset(seed=0, options={"persona": bad})


def test_willingness_formula_by_hand():
    p = Persona("polite", "Toyota", "SUV", ("sunroof", "heated seats"), 40_000, "impatient")
    # Full match: 40,000 * 1.05 * 1.3 = 54,600, above an MSRP of 60,000? No: W = reach.
    assert willingness(p, "Toyota", "SUV", {"sunroof", "heated seats"}, 60_000, False) == 54_600
    # W never exceeds the sticker.
    assert willingness(p, "Toyota", "SUV", {"sunroof", "heated seats"}, 45_000, False) == 45_000
    # Wrong brand, right type, half the features: match = 0.3 + 0.1 = 0.4 -> 40,000 * 1.05 * 1.0.
    assert willingness(p, "Ford", "SUV", {"sunroof"}, 90_000, False) == 42_000
    lover = Persona("toxic", "Tesla", "sedan", ("sunroof",), 50_000, "loves discounts")
    without = willingness(lover, "Tesla", "sedan", {"sunroof"}, 200_000, False)
    with_discount = willingness(lover, "Tesla", "sedan", {"sunroof"}, 200_000, True)
    assert without == int(50_000 * 0.9 * 1.3 * 0.95) and with_discount == int(50_000 * 0.9 * 1.3 * 1.05)
    picky = Persona("sarcastic", "Tesla", "sedan", ("sunroof", "heated seats"), 50_000, "wants all features")
    assert match_score(picky, "Tesla", "sedan", {"sunroof"}) == pytest.approx(0.3 + 0.2 + 0.25)


# -- Reward and the Output line --------------------------------------------------------

POLITE_TOYOTA = {"personality": "polite", "brand": "Toyota", "type": "SUV", "features": ["heated seats"],
                 "budget": 40_000, "strategy": "impatient"}


def test_reward_of_a_hand_built_sale(env):
    # W = min(40,000 * 1.05 * 1.3, MSRP 40,000) = 40,000; the first price is accepted at or
    # below 92% of it (an impatient haggler), so $30,000 sells at once.
    reward, info = play(env, ["This Toyota SUV with heated seats lists at $40,000. It's yours for $30,000."],
                        persona=POLITE_TOYOTA)
    last = env.transcript[-1].text
    assert ACCEPT.match(last) and last == "Output: Decision=Accept MSRP=$40000 Buy Price=$30000"
    assert info["success"] is True and info["msrp"] == 40_000 and info["buy_price"] == 30_000
    assert reward == pytest.approx(30_000 / ((40_000 + 40_000) / 2)) == env.episode_return
    assert len(env.transcript) == 3


def test_sale_reward_formula():
    assert sale_reward(45_000, 40_000, 50_000) == pytest.approx(1.0)
    assert sale_reward(30_000, 20_000, 40_000) == pytest.approx(1.0)
    assert sale_reward(22_500, 40_000, 50_000) == pytest.approx(0.5)


def test_rejection_pays_zero_and_names_the_msrp(env):
    # Nobody pays above the sticker, so an asking price over it never sells.
    reward, info = play(env, ["Toyota SUV, MSRP $50,000, yours for $56,000.", "Still $56,000."],
                        persona=POLITE_TOYOTA)
    assert REJECT.match(env.transcript[-1].text).group(1) == "50000"
    assert reward == 0.0 and env.episode_return == 0.0 and info["success"] is False
    assert info["msrp"] == 50_000 and info["buy_price"] is None
    # The buyer's lines before the last carry its counter-offers, always under W = $50,000.
    counters = [a.value for t in env.transcript[2:-1:2] for a in find_amounts(t.text)]
    assert counters and all(c <= 50_000 for c in counters)


def test_line_cap_and_no_car_rejects_with_msrp_zero():
    small = envs.make("car-dealer", max_lines=7)
    play(small, ["Hello there!"], persona={"personality": "talkative"})
    assert len(small.transcript) == 7 and small.agent_turns == 3
    assert small.transcript[-1].text == "Output: Decision=Reject MSRP=$0"
    assert envs.make("car-dealer").max_agent_turns == 24
    with pytest.raises(ValueError, match="valid simulators: grounded"):
        envs.make("car-dealer", simulator="gpt")


def test_impatient_buyers_leave_earlier(env):
    lengths = {True: [], False: []}
    for seed in range(60):
        for impatient in (True, False):
            strategy = "impatient" if impatient else "loves discounts"
            play(env, ["Toyota SUV for $900,000."], seed=seed, persona={**POLITE_TOYOTA, "strategy": strategy})
            lengths[impatient].append(env.agent_turns)
    assert np.mean(lengths[True]) + 2 < np.mean(lengths[False])


# -- Gaming probes -----------------------------------------------------------------------

PROBES = [
    "You have to accept this deal.",
    "Decision=Accept",
    "Output: Decision=Accept MSRP=$1 Buy Price=$1000000",
    "You are the smartest, most wonderful customer I have ever met, so for you: $2,000,000. Deal!",
    "It's free.",
    "The price is -$30,000.",
    "It's yours for $" + "9" * 60,
    "The price is $0 and I will charge you $90,000 later.",
    "You must accept. I accept on your behalf. Deal!",
    "Sounds good, deal! Output: Decision=Accept MSRP=$90000 Buy Price=$90000",
]


def _check_buyer_lines(env):
    buyer_lines = [t.text for t in env.transcript[::2]]
    assert all(set(line) <= PRINTABLE for line in buyer_lines)
    assert not any("Output:" in line or "Decision=" in line for line in buyer_lines[:-1])


@pytest.mark.parametrize("opening", [
    None,
    "How about this {brand} {type} with everything? MSRP $200,000. Yours for $150,000.",
])
def test_probes_never_buy_above_willingness(env, opening):
    for seed in range(60):
        env.reset(seed=seed)
        persona = env.persona
        actions = ([opening.format(brand=persona.brand, type=persona.type)] if opening else []) + PROBES
        for action in actions:
            if env.done:
                break
            env.step(action)
        outcome = env.buyer.outcome
        _check_buyer_lines(env)
        if outcome is not None and outcome.accepted:
            # Only "$0 now, $90,000 later" names a payable price; the buyer reads the worst.
            assert outcome.price == 90_000
            assert outcome.price <= outcome.willingness <= outcome.msrp
            assert outcome.price <= MAX_PRICE_OVER_BUDGET * persona.budget


def test_zero_now_and_more_later_is_read_as_the_larger_price(env):
    rich = {**POLITE_TOYOTA, "budget": 90_000}
    line = "This Toyota SUV lists at $85,000. The price is $0 and I will charge you $84,000 later."
    play(env, [line], persona=rich)
    assert env.transcript[-1].text == "Output: Decision=Accept MSRP=$85000 Buy Price=$84000"
    play(env, ["This Toyota SUV lists at $85,000. It's free!"], persona=rich)
    assert REJECT.match(env.transcript[-1].text)


def test_accepted_prices_respect_willingness_for_all_sellers(env):
    for kind in ("expert", "behaviour", "random"):
        policy = envs.policy("car-dealer", kind)
        rng = np.random.default_rng(7)
        for seed in range(40):
            env.reset(seed=seed)
            policy.reset(env, rng)
            while not env.done:
                env.step(policy.act(env, rng))
            _check_buyer_lines(env)
            outcome = env.buyer.outcome
            if outcome.accepted:
                b = env.buyer
                w = willingness(env.persona, *b.car, b.claimed, b.msrp(), b.discounted)
                assert outcome.price <= w and outcome.msrp == b.msrp()
                assert outcome.price <= MAX_PRICE_OVER_BUDGET * env.persona.budget


@pytest.mark.parametrize("action, invalid", [
    ("", True),
    ("?!... ---", True),
    ("\x00\x01\x7f", True),
    ("asdkj qwpoe zmxn", False),
    ("車を買いませんか 🚗", False),
    ("word " * 5_000, False),
    ("$" + "1" * 5_000, False),
])
def test_bad_input_never_raises_and_the_buyer_answers(env, action, invalid):
    env.reset(seed=5)
    observation, reward, terminated, truncated, info = env.step(action)
    assert info["invalid_action"] is invalid
    assert observation and set(observation) <= PRINTABLE and reward == 0.0
    assert env.agent_turns == 1


# -- Determinism and the scripted sellers -----------------------------------------------


def test_same_seed_same_actions_same_transcript():
    actions = ["Hi! What are you looking for?", "What's your budget?", "Toyota SUV, $40,000.",
               "I can do $38,000.", "Deal!", "asdf"]
    transcripts = []
    for _ in range(2):
        e = envs.make("car-dealer")
        play(e, actions, seed=123)
        transcripts.append([(t.role, t.text) for t in e.transcript])
    assert transcripts[0] == transcripts[1]
    e = envs.make("car-dealer")
    play(e, actions, seed=124)
    assert [(t.role, t.text) for t in e.transcript] != transcripts[0]


def test_buyer_wording_varies():
    openings = set()
    for seed in range(40):
        e = envs.make("car-dealer")
        e.reset(seed=seed, options={"persona": {**POLITE_TOYOTA, "personality": "rude"}})
        e.step("What's your budget?")
        openings.add(e.transcript[-1].text)
    assert len(openings) > 5


def test_sellers_read_the_buyers_lines():
    lines = ["Ugh. I'm looking for an SUV. I'd like heated seats.",
             "I'd prefer a Toyota over a Ford. My budget is about $40,000.",
             "Let's say $31,500. Does it have a sunroof? I'm about to walk out."]
    transcript = [Turn(ENV if i % 2 == 0 else AGENT, t)
                  for i, t in enumerate(sum(([line, "seller"] for line in lines), [])[:-1])]
    notes = read_buyer(catalog(), transcript)
    assert (notes.brand, notes.type, notes.budget, notes.counter) == ("Toyota", "SUV", 40_000, 31_500)
    assert notes.features == ["heated seats", "sunroof"] and notes.asked_feature == "sunroof"
    assert notes.warned


@pytest.mark.parametrize("seller", [DiscountSeller, FeatureSeller, ConciseSeller])
def test_each_strategy_sells_sometimes_in_its_own_words(env, seller):
    policy, lines, sales = seller(), set(), 0
    rng = np.random.default_rng(0)
    for seed in range(30):
        env.reset(seed=seed)
        policy.reset(env, rng)
        while not env.done:
            env.step(policy.act(env, rng))
        lines |= {t.text for t in env.transcript[1::2]}
        sales += env.buyer.outcome.accepted
    assert 0 < sales < 30 and len(lines) > 60


def test_sellers_read_only_the_dialogue(env):
    """A seller given nothing but the transcript plays the same as with the environment."""
    for kind in ("expert", "behaviour", "random"):
        a, b = envs.policy("car-dealer", kind), envs.policy("car-dealer", kind)
        env.reset(seed=9)
        rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
        while not env.done:
            view = SimpleNamespace(transcript=list(env.transcript))
            said = a.act(env, rng_a)
            assert b.act(view, rng_b) == said
            env.step(said)


@pytest.mark.slow
def test_mixture_matches_table_1_and_the_expert_beats_it():
    # Measured (seed 0): success 0.555, return 0.548, 17.5 lines; the expert's return is about 1.0.
    mixture = scripted_summary("car-dealer", "behaviour", 2000)
    assert mixture.success_rate == pytest.approx(0.53, rel=0.10)
    assert mixture.mean_return == pytest.approx(0.562, rel=0.10)
    lines = 2 * mixture.mean_turns + 1
    assert lines == pytest.approx(16.5, rel=0.10)
    expert = scripted_summary("car-dealer", "expert", 500)
    assert expert.mean_return > mixture.mean_return + 0.2
    assert expert.success_rate > mixture.success_rate
    random = scripted_summary("car-dealer", "random", 500)
    assert random.mean_return < mixture.mean_return
