"""Wordle: the two feedback rules, the vocabularies, guesses in any spacing, invalid
guesses, the episode's end, the settings, the scripted policies."""

from __future__ import annotations

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs import wordle
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.play import play_episode, scripted_summary

# The paper's Table 1 (Wordle dataset: turns, success, return) and its maximum M.
PAPER_TURNS, PAPER_SUCCESS, PAPER_AVG, PAPER_MAX = 4.82, 0.70, -4.12, -1.94


# -- Feedback ------------------------------------------------------------------------

# Worked by hand. Real game: greens first, then each unmatched answer letter turns at most
# one guess letter yellow, leftmost first. The source's rule: a non-green letter is yellow
# whenever the answer holds it anywhere.
FEEDBACK_TABLE = [
    # guess, answer, real game, source's rule
    ("apple", "apple", "g g g g g", "g g g g g"),
    ("speed", "abide", "b b y b y", "b b y y y"),  # one e in the answer: the real game marks one e
    ("eerie", "there", "y b y b g", "y y y b g"),  # last e green, one e left over for the first e
    ("eerie", "abide", "b b b y g", "y y b y g"),  # the only e is green; the source still marks both
    ("llama", "hello", "y y b b b", "y y b b b"),  # two l's in the answer: both l's yellow either way
    ("hello", "llama", "b b y y b", "b b y y b"),
    ("apple", "paper", "y y g b y", "y y g b y"),  # the middle p is green, the first p takes the other
    ("error", "robot", "b y b g b", "b y y g y"),  # one r in the answer
    ("geese", "niece", "b b g b g", "b y g b g"),  # both e's of the answer are green
    ("retry", "ivory", "b b b g g", "y b b g g"),  # the r of the answer is green
    ("sheep", "steep", "g b g g g", "g b g g g"),
    ("crane", "tulip", "b b b b b", "b b b b b"),
]


@pytest.mark.parametrize("guess, answer, real, _", FEEDBACK_TABLE)
def test_real_rule_follows_the_real_game(guess, answer, real, _):
    assert wordle.feedback(guess, answer, "real") == real


@pytest.mark.parametrize("guess, answer, _, original", FEEDBACK_TABLE)
def test_original_rule_marks_every_present_letter_yellow(guess, answer, _, original):
    assert wordle.feedback(guess, answer, "original") == original
    assert wordle.feedback(guess, answer) == original  # the default


def test_unknown_feedback_rule_lists_the_valid_ones():
    for call in (lambda: wordle.feedback("apple", "apple", "strict"),
                 lambda: wordle.feedback_codes(["apple"], "strict"),
                 lambda: wordle.variant(feedback="strict")):
        with pytest.raises(ValueError, match="unknown feedback rule 'strict'; valid rules: original, real"):
            call()


def test_encode_feedback_is_base_three_first_letter_most_significant():
    assert wordle.encode_feedback("b b b b b") == 0
    assert wordle.encode_feedback("g g g g g") == wordle.SOLVED_CODE == 242
    assert wordle.encode_feedback("y b b b b") == 81
    assert wordle.encode_feedback("b b b b g") == 2


@pytest.mark.parametrize("rule", wordle.FEEDBACK_RULES)
def test_feedback_codes_agree_with_feedback(rule):
    table_words = sorted({w for g, a, _, _ in FEEDBACK_TABLE for w in (g, a)})
    codes = wordle.feedback_codes(table_words, rule)
    for i, g in enumerate(table_words):
        for j, a in enumerate(table_words):
            assert codes[i, j] == wordle.encode_feedback(wordle.feedback(g, a, rule)), (g, a)

    game = wordle.variant(feedback=rule)
    words, matrix = game.words, game.matrix
    rng = np.random.default_rng(0)
    for i, j in rng.integers(len(words), size=(3000, 2)):
        assert matrix[i, j] == wordle.encode_feedback(wordle.feedback(words[i], words[j], rule)), (words[i], words[j])
    assert (np.diag(matrix) == wordle.SOLVED_CODE).all()
    assert (matrix == wordle.SOLVED_CODE).sum() == len(words)
    assert not matrix.flags.writeable


def test_the_rules_differ_only_by_extra_yellows():
    real, original = wordle.variant(feedback="real").matrix, wordle.variant(feedback="original").matrix
    place_values = 3 ** np.arange(4, -1, -1)
    d_real = (real[..., None] // place_values) % 3  # (N, N, 5) marks: b=0, y=1, g=2
    d_orig = (original[..., None] // place_values) % 3
    assert ((d_real == 2) == (d_orig == 2)).all()  # the same greens
    assert (d_orig >= d_real).all()  # the source's rule turns some b's of the real game into y's
    # A tenth of the pairs or fewer tell them apart (measured: 9.3% on the default words).
    assert 0.05 < (real != original).mean() < 0.12


# -- Vocabulary ----------------------------------------------------------------------


def test_default_vocabulary_is_the_sources_431_word_list():
    game = wordle.variant()
    assert (game.source, game.rule) == ("original", "original")
    assert len(game.words) == 431
    assert list(game.words) == sorted(set(game.words))
    # The first and last words of the source's wordle_official_400.txt.
    assert {"elect", "nymph", "solar", "cello", "creme", "motto"} <= set(game.words)
    assert "crane" not in game.index and "apple" not in game.index


def test_our_vocabulary_stays_a_setting():
    ours = wordle.variant("ours")
    assert len(ours.words) == 400 and {"crane", "apple"} <= set(ours.words)
    assert len(set(ours.words) & set(wordle.variant().words)) == 69
    assert wordle.load_vocabulary(wordle.VOCABULARIES["ours"]) == ours.words
    assert wordle.variant("ours") is ours  # built once


def test_a_word_file_is_a_vocabulary(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("speed\nabide\n\neerie\n")
    game = wordle.variant(path)
    assert game.words == ("abide", "eerie", "speed")
    assert wordle.variant(str(path)) is game


@pytest.mark.parametrize("bad", ["official", "", "ours.txt", 400])
def test_unknown_vocabulary_lists_the_valid_ones(bad):
    with pytest.raises(ValueError, match="valid vocabularies: original, ours, or the path"):
        wordle.variant(bad)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("apple\nbanana\n", "'banana' is not 5"),
        ("apple\nApple\n", "'Apple'"),
        ("apple\ncrane\napple\n", "repeats"),
        ("\n\n", "no words"),
    ],
)
def test_bad_vocabulary_file_is_named(tmp_path, text, problem):
    path = tmp_path / "words.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as error:
        wordle.load_vocabulary(path)
    assert "words.txt" in str(error.value)


# -- Environment ---------------------------------------------------------------------


def test_first_try_solve_reward_zero_and_transcript_format():
    env = envs.make("wordle")
    obs, _ = env.reset(seed=0, options={"word": "slate"})
    assert obs == "Wordle:"
    obs, reward, terminated, truncated, info = env.step("s l a t e")
    assert (obs, reward, terminated, truncated) == ("g g g g g", 0.0, True, False)
    assert info == {"success": True, "invalid_action": False}
    assert env.render() == "Wordle:\ns l a t e\ng g g g g\n"
    assert env.prompt() == env.render()


@pytest.mark.parametrize(
    "guess",
    ["slate", "s late", "s l a t e", "sl at e", "s  l a t  e", "  s l a t e \n", "\ts la te", "slat e"],
)
def test_any_spacing_of_a_vocabulary_word_is_that_guess(guess):
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "solve"})
    obs, reward, terminated, truncated, info = env.step(guess)
    assert (obs, reward, terminated, truncated) == ("g y b b g", -1.0, False, False)
    assert not info["invalid_action"]
    # The transcript keeps what the agent wrote (stripped), the tokens it was scored on.
    assert env.transcript[1].role == AGENT and env.transcript[1].text == guess.strip()


@pytest.mark.parametrize(
    "guess",
    [
        "S L A T E",  # the source's letters are lower case a-z
        "Slate",
        "s\tl a t e",  # only spaces are removed
        "s l a\nt e",
        "s l a t e s",
        "slat",
        "z z z z z",  # not in the vocabulary
        "c r a n e",  # ours, not the source's
        "",
        "   ",
        "s l á t e",
        "ｓ ｌ ａ ｔ ｅ",  # full-width letters
        "s l a t" + " e" * 3000,
    ],
)
def test_invalid_guess_gets_empty_reply_penalty_and_costs_a_try(guess):
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "slate"})
    obs, reward, terminated, truncated, info = env.step(guess)
    assert (obs, reward, terminated, truncated) == ("", -1.0, False, False)
    assert info["invalid_action"]
    assert env.agent_turns == 1
    assert env.transcript[-1].role == ENV and env.transcript[-1].text == ""


def test_invalid_penalty_is_a_setting():
    env = envs.make("wordle", invalid_penalty=-10)
    env.reset(seed=0, options={"word": "slate"})
    assert env.step("SLATE")[1] == -10.0
    assert env.step("s o l v e")[1] == -1.0


@pytest.mark.parametrize("guess, answer, rule, marks", [
    ("geese", "niece", "original", "b y g b g"),
    ("geese", "niece", "real", "b b g b g"),
    ("retry", "ivory", "original", "y b b g g"),
    ("retry", "ivory", "real", "b b b g g"),
])
def test_the_env_marks_by_its_feedback_setting(guess, answer, rule, marks):
    env = envs.make("wordle", feedback=rule)
    env.reset(seed=0, options={"word": answer})
    assert env.step(guess)[0] == marks


def test_settings_through_the_registry():
    env = envs.make("wordle", vocabulary="ours", feedback="real")
    assert (env.variant.source, env.variant.rule, len(env.variant.words)) == ("ours", "real", 400)
    env.reset(seed=0, options={"word": "abide"})
    assert env.step("speed")[0] == "b b y b y"
    assert {"vocabulary", "feedback", "invalid_penalty"} <= set(envs.settings_of("wordle"))
    with pytest.raises(ValueError, match="valid vocabularies: original, ours"):
        envs.make("wordle", vocabulary="english")
    with pytest.raises(ValueError, match="valid rules: original, real"):
        envs.make("wordle", feedback="hard")
    with pytest.raises(ValueError, match="valid settings"):
        envs.make("wordle", words="ours")


@pytest.mark.parametrize("guess", ["x", "s o l v e"])
def test_six_failed_tries_end_the_episode(guess):
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "slate"})
    for _ in range(5):
        assert not env.step(guess)[2]
    _, _, terminated, truncated, info = env.step(guess)
    assert terminated and not truncated and info["success"] is False
    assert env.done and env.episode_return == -6.0
    assert env.render().count("\n") == 13


def test_pinned_word_must_be_in_the_vocabulary():
    env = envs.make("wordle")
    with pytest.raises(ValueError, match="'crane' is not in the vocabulary \\(original\\)"):
        env.reset(seed=0, options={"word": "crane"})
    env = envs.make("wordle", vocabulary="ours")
    env.reset(seed=0, options={"word": "crane"})


def test_answer_is_drawn_from_the_vocabulary_by_seed():
    env = envs.make("wordle")
    answers = []
    for seed in range(30):
        env.reset(seed=seed)
        answers.append(env.answer)
        env.reset(seed=seed)
        assert env.answer == answers[-1]
    assert set(answers) <= set(env.variant.words)
    assert len(set(answers)) > 20


def test_legal_actions_are_the_spaced_vocabulary():
    env = envs.make("wordle")
    env.reset(seed=0)
    legal = env.legal_actions()
    assert len(legal) == 431 and legal[0] == "a b a c k"
    assert [wordle.parse_guess(a, env.variant.index) for a in legal] == list(env.variant.words)


# -- Policies ------------------------------------------------------------------------


def test_history_reads_valid_guesses_in_any_spacing_from_the_transcript():
    env = envs.make("wordle")
    game = env.variant
    env.reset(seed=0, options={"word": "niece"})
    env.step("gee se")
    env.step("nonsense")
    env.step("  r e t r y")
    assert game.history(env.transcript) == [
        (game.index["geese"], wordle.encode_feedback("b y g b g")),
        (game.index["retry"], wordle.encode_feedback(wordle.feedback("retry", "niece"))),
    ]
    consistent = game.consistent(game.history(env.transcript))
    assert consistent[game.index["niece"]] and not consistent[game.index["geese"]]


def test_consistency_follows_the_rule_of_the_game():
    # geese against niece: the real game's b at the second e rules out answers with a
    # third e; the source's y says only "an e somewhere else", so niece and elder remain.
    for rule, marks in [("original", "b y g b g"), ("real", "b b g b g")]:
        game = wordle.variant(feedback=rule)
        mask = game.consistent([(game.index["geese"], wordle.encode_feedback(marks))])
        assert mask[game.index["niece"]]
        assert all(wordle.feedback("geese", w, rule) == marks for w in np.array(game.words)[mask])


def test_expert_solves_every_word_near_the_paper_maximum():
    env, expert = envs.make("wordle"), envs.policy("wordle", "expert")
    episodes = [play_episode(env, expert, 0, options={"word": w}) for w in env.variant.words]
    assert all(ep.success and ep.agent_turns <= 5 for ep in episodes)
    assert {ep.transcript[1].text for ep in episodes} == {"s l a t e"}  # one precomputed opening
    mean_return = np.mean([ep.episode_return for ep in episodes])
    # Measured -1.9397 (2.94 guesses) on the source's 431 words and rule.
    assert abs(mean_return - PAPER_MAX) < 0.1, mean_return


def test_expert_plays_the_variant_of_its_env():
    env, expert = envs.make("wordle", vocabulary="ours", feedback="real"), envs.policy("wordle", "expert")
    episodes = [play_episode(env, expert, 0, options={"word": w}) for w in env.variant.words[::8]]
    assert all(ep.success and ep.agent_turns <= 4 for ep in episodes)
    assert {ep.transcript[1].text for ep in episodes} == {"c r a n e"}


def test_expert_reads_only_the_transcript():
    env, expert = envs.make("wordle"), envs.policy("wordle", "expert")
    env.reset(seed=0, options={"word": "abide"})
    env.step(expert.act(env, None))
    before = expert.act(env, None)
    env.answer = "nymph"  # what it would guess must not move when the hidden answer does
    assert expert.act(env, None) == before


def test_behaviour_mixture_matches_the_papers_dataset():
    summary = scripted_summary("wordle", "behaviour", 1000)
    # Measured over 20,000 episodes (seed 0): return -4.112, success 0.701, 4.81 turns.
    assert abs(summary.mean_return - PAPER_AVG) < 0.1 * abs(PAPER_AVG), summary
    assert abs(summary.success_rate - PAPER_SUCCESS) < 0.1 * PAPER_SUCCESS, summary
    assert abs(summary.mean_turns - PAPER_TURNS) < 0.1 * PAPER_TURNS, summary


@pytest.mark.parametrize("rule", wordle.FEEDBACK_RULES)
def test_consistent_part_of_the_mixture_only_guesses_consistent_words(rule):
    env, policy = envs.make("wordle", feedback=rule), wordle.WordleBehaviourPolicy(consistent_prob=1.0)
    game = env.variant
    rng = np.random.default_rng(0)
    for seed in range(20):
        env.reset(seed=seed)
        while not env.done:
            guess = policy.act(env, rng)
            assert game.consistent(game.history(env.transcript))[game.index[guess.replace(" ", "")]]
            env.step(guess)
    with pytest.raises(ValueError, match="consistent_prob"):
        wordle.WordleBehaviourPolicy(consistent_prob=1.5)


def test_random_policy_plays_vocabulary_words():
    env, policy = envs.make("wordle"), envs.policy("wordle", "random")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    guesses = {policy.act(env, rng) for _ in range(50)}
    assert guesses <= set(env.legal_actions()) and len(guesses) > 40
