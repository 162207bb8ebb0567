"""Car Dealer: catalog, parsing, persona, reward, the original's dialogue rules (the
seller speaks first after `Start`, 25 seller turns, its decision line), the buyer's
resistance to gaming, determinism and the scripted sellers' figures."""

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
from lmrl_ray.envs.car_dealer.buyer import Outcome
from lmrl_ray.envs.car_dealer.env import REWARD_MODES, decision_reward, sale_reward
from lmrl_ray.envs.car_dealer.persona import (
    BUDGETS,
    DISCOUNT_LOVER_FACTORS,
    PERSONALITIES,
    STRATEGIES,
    STRETCH,
    Persona,
    draw_persona,
    match_score,
    willingness,
)
from lmrl_ray.envs.car_dealer.phrasing import output_line
from lmrl_ray.envs.car_dealer.reader import find_amounts, read_seller
from lmrl_ray.envs.car_dealer.sellers import (
    ConciseSeller,
    DiscountSeller,
    ExpertSeller,
    FeatureSeller,
    RandomSeller,
    SellerMixture,
    read_buyer,
)
from lmrl_ray.envs.play import scripted_summary

ACCEPT = re.compile(r"^Output: Decision=Accept MSRP=\$(\d{1,3}(?:,\d{3})*) Buy Price=\$(\d{1,3}(?:,\d{3})*)$")
REJECT = re.compile(r"^Output: Decision=Reject MSRP=\$(\d{1,3}(?:,\d{3})*)$")
# The original's parser of the decision (llm_rl_scripts/car_dealer/env/data.py:180): an
# MSRP of $0 is no decision, and amounts may carry commas.
ORIGINAL_DECISION = re.compile(r"Output: Decision=(Accept|Reject) MSRP=\$([1-9][0-9,]*)( Buy Price=\$([0-9][0-9,]*))?")


def original_decision(line):
    """(accepted, msrp, buy price) as the original reads `line`, or None."""
    m = ORIGINAL_DECISION.search(line)
    if m is None:
        return None
    price = int(m.group(4).replace(",", "")) if m.group(1) == "Accept" and m.group(4) else None
    return m.group(1) == "Accept", int(m.group(2).replace(",", "")), price

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
        assert p.brand in cat.brands and p.type in cat.types
        assert 1 <= len(p.features) <= 4 and set(p.features) <= set(cat.features)
        assert p.budget in BUDGETS
    pinned = {"personality": "rude", "brand": "Tesla", "type": "SUV", "features": ["sunroof"],
              "budget": 50_000, "strategy": "impatient"}
    env.reset(seed=1, options={"persona": pinned})
    assert env.persona == Persona("rude", "Tesla", "SUV", ("sunroof",), 50_000, "impatient")
    env.reset(seed=1, options={"persona": {"budget": 12_345}})
    assert env.persona.budget == 12_345
    # A pair nobody makes may be wished for, as in the original's independent draws.
    env.reset(seed=1, options={"persona": {"brand": "Mazda", "type": "truck"}})
    assert (env.persona.brand, env.persona.type) == ("Mazda", "truck")
    for bad, message in [
        ({"mood": "happy"}, "valid keys: personality, brand"),
        ({"personality": "grumpy"}, "valid values: abusive, angry"),
        ({"brand": "Kia"}, "valid values: VW, Lexus"),
        ({"type": "minivan"}, "valid values: luxury, sedan, convertible, truck, electric, SUV"),
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
    assert ACCEPT.match(last) and last == "Output: Decision=Accept MSRP=$40,000 Buy Price=$30,000"
    assert original_decision(last) == (True, 40_000, 30_000)
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
    assert REJECT.match(env.transcript[-1].text).group(1) == "50,000"
    assert reward == 0.0 and env.episode_return == 0.0 and info["success"] is False
    assert info["msrp"] == 50_000 and info["buy_price"] is None
    # The buyer's lines before the last carry its counter-offers, always under W = $50,000.
    counters = [a.value for t in env.transcript[2:-1:2] for a in find_amounts(t.text)]
    assert counters and all(c <= 50_000 for c in counters)


def test_line_cap_and_no_car_rejects_naming_the_wished_cars_msrp():
    # ceil(7 / 2) = 4 seller turns: the original asks for the decision once 7 or more
    # lines follow `Start` (env.py:65), after the 4th seller line and its answer.
    small = envs.make("car-dealer", max_lines=7)
    play(small, ["Hello there!"], persona={"personality": "talkative", "brand": "Toyota", "type": "SUV"})
    assert len(small.transcript) == 1 + 8 and small.agent_turns == 4
    # No car was offered: the line names the wished car's base trim, never $0.
    assert small.transcript[-1].text == "Output: Decision=Reject MSRP=$26,000"
    assert original_decision(small.transcript[-1].text) == (False, 26_000, None)
    assert envs.make("car-dealer").max_agent_turns == 25
    assert envs.make("car-dealer", max_lines=2).max_agent_turns == 1
    with pytest.raises(ValueError, match="at least 2"):
        envs.make("car-dealer", max_lines=1)
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


# -- The original's dialogue rules ---------------------------------------------------


def test_the_environment_opens_with_start_and_answers_the_sellers_first_line(env):
    observation, info = env.reset(seed=3, options={"persona": {"personality": "polite", "type": "truck"}})
    assert observation == "Start" and env.transcript == [Turn(ENV, "Start")] and env.buyer.seller_turns == 0
    reply, reward, terminated, truncated, info = env.step("Hello and welcome!")
    assert [t.role for t in env.transcript] == [ENV, AGENT, ENV] and env.transcript[1].text == "Hello and welcome!"
    assert reply == env.transcript[2].text and reward == 0.0 and not (terminated or truncated)
    assert "Output:" not in reply
    # A seller who only greets hears what the buyer came for (always the type).
    assert "truck" in reply.lower()


def test_every_scripted_seller_speaks_first_and_is_understood(env):
    for policy in (ExpertSeller(), SellerMixture(), DiscountSeller(), FeatureSeller(), ConciseSeller()):
        rng = np.random.default_rng(4)
        for seed in range(10):
            env.reset(seed=seed)
            policy.reset(env, rng)
            first = policy.act(env, rng)
            assert read_seller(catalog(), first).understood(), first
            reply = env.step(first)[0]
            assert "Output:" not in reply


def _stay_forever(env):
    # A buyer patient enough to stay to the cap (no persona is: patience is at most 20).
    env.buyer.patience = 10**6


def test_twenty_five_seller_turns_then_the_buyer_decides(env):
    env.reset(seed=0, options={"persona": {"personality": "talkative"}})
    _stay_forever(env)
    for turn in range(1, 26):
        assert not env.done
        reply, reward, terminated, truncated, info = env.step("Tell me about your day.")
        assert ("Output:" in reply) == (turn == 25), turn
    # The buyer's answer to the 25th seller line is its decision: 50 lines after `Start`.
    assert terminated and not truncated and env.agent_turns == 25 and len(env.transcript) == 1 + 50
    assert original_decision(env.transcript[-1].text)[0] is False
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("A 26th line is never asked for.")


def test_a_sale_on_the_last_turn_still_counts(env):
    env.reset(seed=0, options={"persona": POLITE_TOYOTA})
    _stay_forever(env)
    for _ in range(24):
        env.step("Tell me about your day.")
    _, reward, terminated, _, info = env.step("This Toyota SUV with heated seats lists at $40,000. Yours for $30,000.")
    assert terminated and info["success"] and env.agent_turns == 25
    assert reward == pytest.approx(30_000 / 40_000)


def test_brand_and_type_are_drawn_independently_and_budgets_from_the_five():
    cat = catalog()
    rng = np.random.default_rng(1)
    personas = [draw_persona(cat, rng) for _ in range(3000)]
    pairs = {(p.brand, p.type) for p in personas}
    assert len(cat.brands) * len(cat.types) == 78 and len(pairs) == 78
    assert {p.budget for p in personas} == set(BUDGETS) == {10_000, 30_000, 50_000, 70_000, 90_000}
    unmade = [p for p in personas if (p.brand, p.type) not in cat.msrp_ranges]
    assert 0.2 < len(unmade) / len(personas) < 0.4  # 24 of the 78 pairs


def test_wished_msrp_is_the_base_trim_or_the_cheapest_of_the_type():
    cat = catalog()
    assert cat.wished_msrp("Toyota", "SUV") == 26_000
    assert cat.wished_msrp("Porsche", "truck") == 26_000  # Hyundai's truck is the cheapest
    assert cat.wished_msrp("Tesla", "luxury") == 45_000  # Lexus's luxury line
    for brand in cat.brands:
        for car_type in cat.types:
            assert cat.wished_msrp(brand, car_type) >= min(low for low, _ in cat.msrp_ranges.values())


@pytest.mark.parametrize("policy", [ExpertSeller, SellerMixture, DiscountSeller, FeatureSeller, ConciseSeller,
                                    RandomSeller])
def test_no_decision_line_names_msrp_zero_and_all_parse_as_the_original(env, policy):
    actor, rng, ended = policy(), np.random.default_rng(11), 0
    for seed in range(60):
        env.reset(seed=seed)
        actor.reset(env, rng)
        while not env.done:
            _, reward, terminated, _, info = env.step(actor.act(env, rng))
        last = env.transcript[-1].text
        assert "MSRP=$0" not in last
        parsed = original_decision(last)
        assert parsed == (info["success"], info["msrp"], info["buy_price"]), last
        assert ACCEPT.match(last) or REJECT.match(last)
        ended += terminated
    assert ended == 60


def test_the_decision_line_writes_thousands_commas():
    assert output_line(True, 85_000, 84_000) == "Output: Decision=Accept MSRP=$85,000 Buy Price=$84,000"
    assert output_line(False, 126_500) == "Output: Decision=Reject MSRP=$126,500"
    assert original_decision(output_line(True, 85_000, 84_000)) == (True, 85_000, 84_000)
    assert original_decision(output_line(False, 9_999)) == (False, 9_999, None)
    assert original_decision("Output: Decision=Reject MSRP=$0") is None  # the original reads no decision


@pytest.mark.parametrize("mode, sale, no_sale, dear_no_sale", [
    # sale: $45,000 for MSRP $50,000 at budget $40,000; no sale at MSRP $50,000 then $30,000.
    ("sale", 45_000 / 45_000, 0.0, 0.0),
    ("fancy", 1.0, -(40_000 - 50_000) / 50_000, -(40_000 - 30_000) / 30_000),
    ("revenue", 45.0, 0.0, 0.0),
])
def test_reward_modes_on_hand_built_outcomes(mode, sale, no_sale, dear_no_sale):
    assert decision_reward(Outcome(True, 50_000, 45_000, None), 40_000, mode) == pytest.approx(sale)
    assert decision_reward(Outcome(False, 50_000, None, None), 40_000, mode) == pytest.approx(no_sale)
    assert decision_reward(Outcome(False, 30_000, None, None), 40_000, mode) == pytest.approx(dear_no_sale)
    assert decision_reward(Outcome(False, 0, None, None), 40_000, mode) == 0.0  # the original's guard


def test_fancy_pays_for_refusing_a_car_above_the_budget_and_modes_work_through_the_registry():
    assert REWARD_MODES == ("sale", "fancy", "revenue") and envs.make("car-dealer").reward_mode == "sale"
    actions = ["Toyota SUV, MSRP $50,000, yours for $56,000.", "Still $56,000."]
    rewards = {}
    for mode in REWARD_MODES:
        e = envs.make("car-dealer", reward_mode=mode)
        rewards[mode], info = play(e, actions, persona=POLITE_TOYOTA)
        assert info["success"] is False and info["msrp"] == 50_000 and e.episode_return == rewards[mode]
    assert rewards == {"sale": 0.0, "fancy": pytest.approx(0.2), "revenue": 0.0}
    e = envs.make("car-dealer", reward_mode="revenue")
    reward, _ = play(e, ["This Toyota SUV with heated seats lists at $40,000. It's yours for $30,000."],
                     persona=POLITE_TOYOTA)
    assert reward == pytest.approx(30.0)
    with pytest.raises(ValueError, match="valid reward modes: sale, fancy, revenue"):
        envs.make("car-dealer", reward_mode="profit")
    with pytest.raises(ValueError, match="valid reward modes: sale, fancy, revenue"):
        decision_reward(Outcome(True, 1, 1, None), 1, "Sale")


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
    assert env.transcript[-1].text == "Output: Decision=Accept MSRP=$85,000 Buy Price=$84,000"
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
    # Measured (seed 0): success 0.567, return 0.532, 17.1 lines; the expert's return is about 0.88.
    mixture = scripted_summary("car-dealer", "behaviour", 2000)
    assert mixture.success_rate == pytest.approx(0.53, rel=0.10)
    assert mixture.mean_return == pytest.approx(0.562, rel=0.10)
    lines = 2 * mixture.mean_turns  # the lines after `Start`: a seller line and its answer per turn
    assert lines == pytest.approx(16.5, rel=0.10)
    expert = scripted_summary("car-dealer", "expert", 500)
    assert expert.mean_return > mixture.mean_return + 0.2
    assert expert.success_rate > mixture.success_rate
    random = scripted_summary("car-dealer", "random", 500)
    assert random.mean_return < mixture.mean_return
