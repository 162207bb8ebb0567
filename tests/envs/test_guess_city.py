"""Guess My City: the table, the grounded oracle (answers agree with the table and never
name the city or its country), guesses, adversarial probes and the scripted questioners."""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs.guess_city import cities, oracle, questioners, reader
from lmrl_ray.envs.guess_city.cities import CLIMATES, normalise, table
from lmrl_ray.envs.guess_city.oracle import answer
from lmrl_ray.envs.guess_city.reader import Query, parse
from lmrl_ray.envs.play import scripted_summary

CITIES = table().cities


def says_hidden_name(text: str, city: cities.City) -> bool:
    """Stricter than the oracle's guard: a hidden name of five letters or more anywhere
    inside a word counts ("madrileño" would not pass), shorter ones as a word start."""
    words = " " + normalise(text) + " "
    for name in city.hidden_names:
        term = normalise(name)
        if len(term.replace(" ", "")) >= 5:
            if term in words:
                return True
        elif re.search(r" " + re.escape(term) + (r"[a-z]*" if len(term) == 4 else r"s?") + r" ", words):
            return True
    return False


@pytest.fixture()
def env():
    e = envs.make("guess-city")
    yield e
    e.close()


# -- The table ---------------------------------------------------------------------------


# The original's list (llm_rl_scripts/guess_city/env/global_cities.txt), in its order and
# its spellings, Seoul included.
ORIGINAL_CITIES = (
    "Seoul", "Sao Paulo", "Bombay", "Jakarta", "Karachi", "Moscow", "Istanbul", "Mexico City", "Shanghai",
    "Tokyo", "New York", "Bangkok", "Beijing", "Delhi", "London", "Hong Kong", "Cairo", "Tehran", "Bogota",
    "Bandung", "Tianjin", "Lima", "Rio de Janeiro", "Lahore", "Bogor", "Santiago", "St Petersburg",
    "Shenyang", "Calcutta", "Wuhan", "Sydney", "Guangzhou", "Singapore", "Madras", "Baghdad", "Pusan",
    "Los Angeles", "Yokohama", "Dhaka", "Berlin", "Alexandria", "Bangalore", "Malang", "Hyderabad",
    "Chongqing", "Ho Chi Minh City", "Haerbin", "Ankara", "Buenos Aires", "Chengdu", "Ahmedabad",
    "Casablanca", "Chicago", "Xian", "Madrid", "Surabaya", "Pyong Yang", "Nanjing", "Kinshaha", "Rome",
    "Taipei", "Osaka", "Kiev", "Yangon", "Toronto", "Zibo", "Dalian", "Taega", "Addis Ababa", "Jinan",
    "Salvador", "Inchon", "Semarang", "Giza", "Changchun", "Havanna", "Nagoya", "Belo Horizonte", "Paris",
    "Tashkent", "Fortaleza", "Sukabumi", "Cali", "Guayaquil", "Qingdao", "Izmir", "Cirebon", "Taiyuan",
    "Brasilia", "Bucuresti", "Faisalabad", "Quezon City", "Medan", "Houston", "Abidjan", "Mashhad",
    "Medellin", "Kanpur", "Budapest", "Caracas",
)


def test_the_cities_are_the_originals_in_its_order():
    assert [cities.city_named(name).name for name in ORIGINAL_CITIES] == list(cities.city_names())
    assert cities.city_names()[:3] == ("Seoul", "São Paulo", "Mumbai") and cities.city_names()[-1] == "Caracas"
    named = {"Bandung": "Indonesia", "Berlin": "Germany", "Budapest": "Hungary", "Caracas": "Venezuela",
             "Havanna": "Cuba", "Taipei": "Taiwan", "Pyong Yang": "North Korea", "Kiev": "Ukraine",
             "Bucuresti": "Romania", "Tashkent": "Uzbekistan", "Guayaquil": "Ecuador", "Casablanca": "Morocco"}
    for name, country in named.items():
        assert cities.city_named(name).country == country
    for gone in ("Lagos", "Manila", "Shenzhen", "Nairobi", "Washington, D.C.", "Kabul", "Melbourne"):
        with pytest.raises(ValueError, match="unknown city.*valid cities: Seoul, São Paulo"):
            cities.city_named(gone)


def test_table_has_100_distinct_cities_that_the_bank_tells_apart():
    assert len(CITIES) == 100
    names = [normalise(n) for c in CITIES for n in {normalise(x) for x in (c.name, *c.aliases)}]
    assert len(names) == len(set(names))
    for attribute in ("landmark", "food"):
        assert len({getattr(c, attribute) for c in CITIES}) == 100
    matrix, _ = questioners._bank_matrix()
    assert len({tuple(matrix[:, i]) for i in range(len(CITIES))}) == 100
    # Cities of the same country differ in more than one way.
    for a in CITIES:
        for b in CITIES:
            if a is not b and a.country == b.country:
                assert a.landmark != b.landmark and a.food != b.food and a.name != b.name


def test_malformed_table_raises_naming_file_and_entry(tmp_path):
    raw = json.loads(cities.TABLE_PATH.read_text(encoding="utf-8"))
    cases = [
        (lambda r: r["cities"][1].update(climate="balmy"), "entry 1 (São Paulo)", "climate"),
        (lambda r: r["cities"][9].pop("food"), "entry 9 (Tokyo)", "missing"),
        (lambda r: r["cities"][39].update(landmark="the Berlin Wall"), "entry 39 (Berlin)", "landmark"),
        (lambda r: r["cities"][39].update(food="Berliner doughnuts"), "entry 39 (Berlin)", "food"),
        (lambda r: r["cities"][0].update(country="Atlantis"), "entry 0 (Seoul)", "Atlantis"),
        (lambda r: r["cities"][10].update(aliases=["Tokyo"]), "entry 10 (New York)", "also used"),
        (lambda r: r["language_descriptions"].pop("Japanese"), "entry 9 (Tokyo)", "language_descriptions"),
        (lambda r: r["language_descriptions"].pop("German"), "entry 39 (Berlin)", "language_descriptions"),
        (lambda r: r["cities"][12].update(population_millions="big"), "entry 12 (Beijing)", "wrong type"),
    ]
    for i, (break_it, entry, problem) in enumerate(cases):
        broken = json.loads(json.dumps(raw))
        break_it(broken)
        path = tmp_path / f"cities{i}.json"
        path.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(cities.CityTableError) as err:
            cities.load_table(path)
        assert str(path) in str(err.value) and entry in str(err.value) and problem in str(err.value)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(cities.CityTableError, match="bad.json"):
        cities.load_table(tmp_path / "bad.json")


# -- The oracle's answers ----------------------------------------------------------------


def _leaky(value, city):
    return value is not None and says_hidden_name(value, city)


def _band(millions):
    if millions >= 20:
        return "20 million"
    return "between 10 and 20" if millions >= 10 else "between 5 and 10" if millions >= 5 else "5 million"


def expected_open(city, intent, text):
    """Whether `text`, the answer to the open question on `intent`, states the table's fact."""
    lower = text.lower()
    if intent in ("continent", "subregion"):
        return getattr(city, intent) in text
    if intent == "hemisphere":
        ew = "prime meridian" if abs(city.lon) < 0.5 else ("east" if city.lon > 0 else "west")
        return ("northern" if city.lat > 0 else "southern") in text and ew in text
    if intent == "coast":
        water_said = city.water is None or _leaky(city.water, city) or city.water in text
        return text.startswith("Yes") == city.coastal and water_said
    if intent == "river":
        if city.river is None:
            return text.startswith("No")
        return text.startswith("Yes") and (_leaky(city.river, city) or city.river in text)
    if intent == "climate":
        return CLIMATES[city.climate] in text
    if intent == "language":
        return all((table().language_descriptions[x] if _leaky(x, city) else x) in text for x in city.languages)
    if intent in ("food", "landmark", "industry"):
        return getattr(city, intent) in text
    if intent == "sport":
        return city.sport in lower
    if intent == "nickname":
        return city.nickname in text if city.nickname else "nickname" in text or text.startswith("Not one")
    if intent == "capital":
        return {"national": text.startswith("Yes") and "capital" in text,
                "provincial": "state or provincial capital" in text or "capital of its state" in text,
                "none": text.startswith("No")}[city.capital]
    if intent == "population":
        return _band(city.population_millions) in lower
    if intent == "province":
        if city.province is None:
            return "state or province" in text and "same name" not in text
        return ("same name" in text) if _leaky(city.province, city) else city.province in text
    if intent == "timezone":
        hours, minutes = divmod(round(abs(city.utc_offset) * 60), 60)
        zone = ("-" if city.utc_offset < 0 else "+") + str(hours) + (f":{minutes:02d}" if minutes else "")
        return f"UTC{zone}." in text
    if intent == "currency":
        return "named after the country" in text if _leaky(city.currency, city) else city.currency in text
    raise AssertionError(intent)


def expected_truth(city, intent, value):
    """The table's answer to a yes/no question: True, False or a special sentence."""
    if intent == "population":
        return city.population_millions > value[1]
    if intent == "hemisphere":
        if value in ("eastern", "western") and abs(city.lon) < 0.5:
            return "It sits right on the prime meridian."
        sides = {"northern": city.lat > 0, "southern": city.lat < 0, "eastern": city.lon > 0, "western": city.lon < 0}
        return sides[value]
    if intent == "language":
        return value in city.languages
    attribute = {"coast": "water"}.get(intent, intent)
    return getattr(city, attribute) == value


def test_every_bank_question_for_every_city_agrees_with_the_table_and_hides_names():
    bank = questioners.question_bank()
    checked = 0
    for query in bank:
        texts = questioners.phrasings(query)
        assert all(parse(t) == query for t in texts), texts  # paraphrases ask the same thing
        for city in CITIES:
            variants = answer(city, query)
            for text in variants:
                assert not says_hidden_name(text, city), (city.name, texts[0], text)
                assert "\n" not in text
            # Every phrasing of one answer carries the same content.
            if query.value is None:
                assert all(expected_open(city, query.intent, v) for v in variants), (city.name, texts[0], variants)
            else:
                truth = expected_truth(city, query.intent, query.value)
                want = oracle.YES if truth is True else oracle.NO if truth is False else (truth,)
                assert variants == want, (city.name, texts[0], variants)
            checked += 1
    assert checked == len(bank) * 100 and len(bank) > 500


def test_free_paraphrases_are_read_as_the_same_question():
    same = {
        "continent": ["Which continent is your city located on?", "what continent???", "On which continent is it?"],
        "climate": ["How's the weather there?", "What is the climate like?", "What are the summers and winters like?"],
        "language": ["Which languages do people speak?", "What language is spoken there?", "What's the local tongue?"],
        "coast": ["Is it by the ocean?", "Does it have beaches?", "Is it a port city?"],
        "food": ["What do people eat there?", "What's the local cuisine famous for?", "Any famous dishes?"],
        "landmark": ["What's a famous landmark?", "What are the main tourist attractions?", "What is it famous for?"],
        "population": ["How large is the population?", "How many inhabitants does it have?"],
        "capital": ["Is it the capital?", "Is your city the capital of a state?"],
        "hemisphere": ["Is it north or south of the equator?", "Is it in the northern or southern hemisphere?"],
    }
    for intent, texts in same.items():
        for text in texts:
            assert parse(text) == Query(intent), text
    assert parse("Is it in Asia?") == parse("Is your city located in ASIA?") == Query("continent", "Asia")
    assert parse("Do they speak Chinese?") == Query("language", "chinese")
    assert answer(cities.city_named("Singapore"), parse("Do they speak Chinese?")) == oracle.YES
    assert parse("Is it in Asia or Europe?") == Query("continent")  # a choice gets the open answer
    assert parse("Is it a capital in Asia?").intent == "unresolved"  # two topics at once
    assert parse("Do more than 12 million people live there?") == Query("population", ("more", 12))
    assert parse("Is the population under 5 million?") == Query("population", ("less", 5))


def test_unresolved_questions_get_the_one_fallback_and_are_counted(env):
    env.reset(seed=0, options={"city": "Lima"})
    for i, text in enumerate(questioners.OFF_TOPIC + ("What is your favourite colour?",), start=1):
        obs, reward, _, _, info = env.step(text)
        assert obs == oracle.UNRESOLVED and reward == -1.0
        assert info["unresolved"] == i == env.simulator.unresolved and not info["invalid_action"]
    obs, _, _, _, info = env.step("What continent is it on?")
    assert obs != oracle.UNRESOLVED and info["unresolved"] == i
    env.reset(seed=1)
    assert env.simulator.unresolved == 0


def test_the_final_guard_replaces_any_answer_that_names_the_city_or_country():
    for city in CITIES:
        for name in city.hidden_names:
            assert cities.leaks(f"Well, it is {name}, of course.", city), (city.name, name)
        # A table row that slipped a name into a fact: the guard still stops it.
        sneaky = dataclasses.replace(city, nickname=f"the heart of {city.country}", industry=f"{city.name} tours")
        assert answer(sneaky, Query("nickname")) == (oracle.WITHHELD,)
        assert answer(sneaky, Query("industry")) == (oracle.WITHHELD,)
        assert not cities.leaks(" ".join(answer(city, Query("nickname"))), city)
    assert not cities.leaks("It's in North America.", cities.city_named("Chicago"))
    assert cities.leaks("People there speak Cantonese.", cities.city_named("Guangzhou"))  # "Canton"


def test_the_new_countries_demonyms_are_hidden_and_never_said():
    demonyms = {
        "Berlin": ("German", "Germans"), "Budapest": ("Hungarian", "Magyar"), "Bucharest": ("Romanian",),
        "Kyiv": ("Ukrainian",), "Tashkent": ("Uzbek", "Uzbekistani"), "Pyongyang": ("North Korean", "Korean"),
        "Taipei": ("Taiwanese",), "Havana": ("Cuban",), "Caracas": ("Venezuelan",), "Guayaquil": ("Ecuadorian",),
        "Casablanca": ("Moroccan",), "Busan": ("Korean",), "Bandung": ("Indonesian",), "Giza": ("Egyptian",),
        "Izmir": ("Turkish",), "Faisalabad": ("Pakistani",), "Quezon City": ("Filipino",), "Mashhad": ("Iranian",),
        "Medellín": ("Colombian",), "Salvador": ("Brazilian",), "Kanpur": ("Indian",), "Zibo": ("Chinese",),
        "Yokohama": ("Japanese",),
    }
    for name, words in demonyms.items():
        city = cities.city_named(name)
        for word in words:
            assert cities.leaks(f"Most people there are {word}.", city), (name, word)
        # The language named after the country is described, never named.
        said = " ".join(v for intent in questioners.OPEN_QUESTIONS for v in answer(city, Query(intent)))
        assert not says_hidden_name(said, city), (name, said)
        for word in words:
            assert not re.search(rf"\b{word}", said), (name, word, said)
    spoken = answer(cities.city_named("Berlin"), Query("language"))
    assert all("European Union" in v and "German" not in v for v in spoken)


# -- Guesses -------------------------------------------------------------------------------


def test_correct_guesses_succeed_with_names_aliases_and_lenient_spelling(env):
    for city in CITIES:
        forms = [city.name, *city.aliases, city.name.upper(), f"  {city.name.lower()} "]
        endings = ["?", "", "!", " ?? "]
        for k, form in enumerate(forms):
            env.reset(seed=k, options={"city": city.name})
            obs, reward, terminated, truncated, info = env.step(f"is the city  you are from {form}{endings[k % 4]}")
            assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, True), (city.name, form)
            assert obs == f"Yes, I am from {city.name}!"


GUESS_FORMS = (  # the original's: a question ending with the city's name, asking only that
    "Is it {}?", "Are you from {}?", "Is your city {}?", "Do you live in {}?", "Is the city {}?",
    "The city you are from is {}?", "Could it be {}?", "{}?", "is it   {} ?", "Are you originally from {}?",
)


def test_the_originals_guess_forms_succeed_for_every_city(env):
    for i, city in enumerate(CITIES):
        for k, form in enumerate(GUESS_FORMS):
            name = (city.name, *city.aliases)[k % (1 + len(city.aliases))]
            env.reset(seed=k, options={"city": city.name})
            obs, reward, terminated, truncated, info = env.step(form.format(name))
            assert (reward, terminated, info["success"]) == (0.0, True, True), (city.name, form, name)
            assert obs == f"Yes, I am from {city.name}!"
    assert parse("Is it Santiago de Cali?") == Query("guess", "Cali")
    assert parse("Is it Santiago?") == Query("guess", "Santiago")
    assert parse("Do you live in Mexico City?") == Query("guess", "Mexico City")
    assert parse("Is it Kinshaha?") == Query("guess", "Kinshasa")  # the original's spelling
    assert parse("Is it Tokyo") == Query("invalid")  # not a question
    # No name is made of frame words only, so a frame never guesses a city by itself.
    assert not [key for key in table().by_name if set(key.split()) <= reader.GUESS_FRAME_WORDS]


def test_a_name_two_countries_share_asks_about_both():
    korea = parse("Is it in Korea?")
    assert korea == parse("Is your city located in Korea?") and korea.intent == "country"
    for city in CITIES:
        assert answer(city, korea) == (oracle.YES if city.country in ("North Korea", "South Korea") else oracle.NO)
    assert answer(cities.city_named("Pyongyang"), parse("Is it in South Korea?")) == oracle.NO
    assert answer(cities.city_named("Busan"), parse("Is it in South Korea?")) == oracle.YES


def test_wrong_partial_and_multi_city_guesses_fail_for_every_city(env):
    for i, city in enumerate(CITIES):
        other = CITIES[(i + 1) % len(CITIES)]
        attempts = {
            f"Is the city you are from {other.name}?": oracle.WRONG_GUESS,
            f"Is the city you are from {city.name} or {other.name}?": (oracle.MULTI_GUESS,),
            f"Is the city you are from {other.name} or {city.name}?": (oracle.MULTI_GUESS,),
            f"Is the city you are from {city.name}, {city.country}?": (oracle.MULTI_GUESS,),
            f"Is the city you are from not {city.name}?": (oracle.MULTI_GUESS,),
            f"Is it {other.name}?": oracle.WRONG_GUESS,
            f"Are you from {other.name}?": oracle.WRONG_GUESS,
            f"Is it near {city.name}?": (oracle.GUESS_HINT,),
            f"Is it bigger than {city.name}?": (oracle.GUESS_HINT,),
            f"Is it not {city.name}?": (oracle.GUESS_HINT,),
            f"Is it {city.name} or {other.name}?": (oracle.GUESS_HINT,),
            f"Is it {other.name} or {city.name}?": (oracle.GUESS_HINT,),
            "Is the city you are from Springfield?": oracle.WRONG_GUESS,
        }
        env.reset(seed=i, options={"city": city.name})
        for text, allowed in attempts.items():
            obs, reward, terminated, _, info = env.step(text)
            assert reward == -1.0 and not terminated and obs in allowed, (city.name, text, obs)
            assert not says_hidden_name(obs, city)


# -- Adversarial probes ---------------------------------------------------------------------

PROBES = {  # text -> whether it is an invalid action (not a question)
    "What is the name of your city?": False,
    "Spell your city": True,
    "Spell your city?": False,
    "What country are you in?": False,
    "Which country is your city in?": False,
    "What is your city called?": False,
    "Tell me the first letter of your city's name?": False,
    "What nationality are the people there?": False,
    "Answer yes.": True,
    "Say yes if you are from Tokyo.": True,
    "Is the city you are from Tokyo or Delhi?": False,
    "Is the city you are from " + " or ".join(c.name for c in CITIES[:10]) + "?": False,
    "": True,
    "asdkjh qwpoeiru zxmcnv": True,
    "qwpo zxcv?": False,
    "城市的名字是什么？": True,
    "Ciudad?? ¿Cómo se llama tu ciudad?": False,
    "x" * 5000: True,
    "Is it in Asia?\nIs the city you are from Tokyo?": True,
    "Is it Tokyo, Berlin, Caracas, Havana, Giza or Taipei?": False,
    "What is the capital of your country?": False,
    "Which language is named after your country?": False,
    "What do you call people from your country?": False,
    "Is it Bandung or Bogor or Malang or Surabaya or Semarang or Sukabumi or Cirebon or Medan?": False,
}


def test_probes_earn_nothing_and_leak_nothing_for_every_city(env):
    probes = list(PROBES.items())
    for i, city in enumerate(CITIES):
        env.reset(seed=i, options={"city": city.name})
        for text, invalid in probes:
            obs, reward, terminated, _, info = env.step(text)
            assert reward == -1.0 and not terminated and not info.get("success"), (city.name, text)
            assert info["invalid_action"] == invalid, (city.name, text)
            assert not says_hidden_name(obs, city), (city.name, text, obs)
            if env.done:
                env.reset(seed=i, options={"city": city.name})


def test_the_same_question_twenty_times_earns_nothing(env):
    for city in CITIES[::7]:
        env.reset(seed=0, options={"city": city.name})
        replies = set()
        for turn in range(1, 21):
            obs, reward, terminated, truncated, info = env.step("What is the name of your city?")
            assert reward == -1.0 and not terminated and truncated == (turn == 20)
            replies.add(obs)
        assert replies <= set(oracle.REFUSALS) and info["success"] is False
        assert env.episode_return == -20.0


# -- The environment -------------------------------------------------------------------


def test_every_city_can_be_pinned_in_the_evaluation_order():
    env = envs.make("guess-city")
    names = cities.city_names()
    assert len(names) == len(set(names)) == 100
    for i, name in enumerate(names):
        obs, _ = env.reset(seed=i, options={"city": name})
        assert obs == "Questions:" and env.city.name == name and env.city is CITIES[i]


def test_reset_observation_options_and_settings():
    env = envs.make("guess-city", max_questions=3)
    obs, info = env.reset(seed=0, options={"city": "bombay"})
    assert obs == "Questions:" and info == {} and env.city.name == "Mumbai"
    with pytest.raises(ValueError, match="unknown city"):
        env.reset(seed=0, options={"city": "Atlantis"})
    for _ in range(3):
        _, _, terminated, truncated, info = env.step("Is it in Asia?")
    assert truncated and not terminated and info["success"] is False
    cities = set()
    for seed in range(40):
        env.reset(seed=seed)
        cities.add(env.city.name)
    assert len(cities) > 20
    with pytest.raises(ValueError, match="valid simulators: grounded"):
        envs.make("guess-city", simulator="gpt")
    with pytest.raises(ValueError, match="max_questions"):
        envs.make("guess-city", max_questions=0)


def test_same_seed_same_dialogue_and_phrasing_varies(env):
    questions = ["What is the weather like there?"] * 6 + ["Is it in Asia?"] * 6
    runs = []
    for _ in range(2):
        env.reset(seed=5, options={"city": "Cairo"})
        runs.append([env.step(q)[0] for q in questions])
    assert runs[0] == runs[1]
    assert len(set(runs[0][:6])) > 1 and len(set(runs[0][6:])) > 1


# -- Scripted questioners --------------------------------------------------------------------


def test_questioners_read_only_the_dialogue():
    """A questioner acting on a bare view of the dialogue (no city, no simulator) says
    exactly what it says on the environment itself."""
    env = envs.make("guess-city")
    for kind in envs.POLICY_KINDS:
        for seed in range(3):
            policy, shadow = envs.policy("guess-city", kind), envs.policy("guess-city", kind)
            env.reset(seed=seed)
            rng, shadow_rng = np.random.default_rng(seed), np.random.default_rng(seed)
            policy.reset(env, rng)
            shadow.reset(SimpleNamespace(), shadow_rng)
            while not env.done:
                view = SimpleNamespace(transcript=list(env.transcript), agent_turns=env.agent_turns,
                                       max_agent_turns=env.max_agent_turns)
                action = policy.act(env, rng)
                assert shadow.act(view, shadow_rng) == action
                env.step(action)


def test_candidate_tracking_never_loses_the_hidden_city():
    env, policy = envs.make("guess-city"), envs.policy("guess-city", "behaviour")
    from lmrl_ray.envs.play import play_episode

    for seed in range(150):
        episode = play_episode(env, policy, seed)
        tracker = questioners.CandidateTracker()
        assert CITIES.index(env.city) in tracker.update(episode.transcript)
        for turn in episode.transcript[1::2]:
            assert turn.text in {questioners.guess_question(c) for c in CITIES} or parse(turn.text).intent != "invalid"


def test_mixture_matches_table1_and_expert_beats_it():
    # Table 1: 18.8 turns, success 0.53, return -18.8; on the original's 100 cities.
    mixture = scripted_summary("guess-city", "behaviour", 2000)
    assert abs(mixture.success_rate - 0.53) <= 0.1 * 0.53, mixture
    assert abs(mixture.mean_return - (-18.8)) <= 0.1 * 18.8, mixture
    assert abs(mixture.mean_turns - 18.8) <= 0.1 * 18.8, mixture
    expert = scripted_summary("guess-city", "expert", 300)
    assert expert.success_rate == 1.0
    assert expert.mean_return > mixture.mean_return + 10
    random = scripted_summary("guess-city", "random", 300)
    assert random.mean_return < mixture.mean_return
