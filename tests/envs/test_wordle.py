"""Wordle: the real game's feedback, invalid guesses, the episode's end, the scripted policies."""

from __future__ import annotations

import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs import wordle
from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.play import play_episode, scripted_summary

PAPER_AVG, PAPER_MAX = -4.12, -1.94


# -- Feedback ------------------------------------------------------------------------

# Worked by hand: greens first, then each unmatched answer letter turns at most one guess
# letter yellow, leftmost first.
FEEDBACK_TABLE = [
    ("apple", "apple", "g g g g g"),
    ("speed", "abide", "b b y b y"),  # one e in the answer: only the first e is yellow
    ("eerie", "there", "y b y b g"),  # last e green, one e left over for the first e
    ("eerie", "abide", "b b b y g"),  # the only e is matched green, so the earlier e's are b
    ("llama", "hello", "y y b b b"),  # two l's in the answer: both l's yellow
    ("hello", "llama", "b b y y b"),
    ("apple", "paper", "y y g b y"),  # the middle p is green, the first p takes the other p
    ("error", "robot", "b y b g b"),  # one r in the answer: only the first r is yellow
    ("sheep", "steep", "g b g g g"),
    ("crane", "tulip", "b b b b b"),
]


@pytest.mark.parametrize("guess, answer, expected", FEEDBACK_TABLE)
def test_feedback_follows_the_real_game(guess, answer, expected):
    assert wordle.feedback(guess, answer) == expected


def test_encode_feedback_is_base_three_first_letter_most_significant():
    assert wordle.encode_feedback("b b b b b") == 0
    assert wordle.encode_feedback("g g g g g") == wordle.SOLVED_CODE == 242
    assert wordle.encode_feedback("y b b b b") == 81
    assert wordle.encode_feedback("b b b b g") == 2


def test_feedback_codes_agree_with_feedback():
    table_words = sorted({w for g, a, _ in FEEDBACK_TABLE for w in (g, a)})
    codes = wordle.feedback_codes(table_words)
    for i, g in enumerate(table_words):
        for j, a in enumerate(table_words):
            assert codes[i, j] == wordle.encode_feedback(wordle.feedback(g, a)), (g, a)

    words, matrix = wordle.vocabulary(), wordle.feedback_matrix()
    rng = np.random.default_rng(0)
    for i, j in rng.integers(len(words), size=(3000, 2)):
        expected = wordle.encode_feedback(wordle.feedback(words[i], words[j]))
        assert matrix[i, j] == expected, (words[i], words[j])
    assert (np.diag(matrix) == wordle.SOLVED_CODE).all()
    assert (matrix == wordle.SOLVED_CODE).sum() == len(words)


# -- Vocabulary ----------------------------------------------------------------------


def test_vocabulary_is_about_400_unique_five_letter_words():
    words = wordle.vocabulary()
    assert 350 <= len(words) <= 450
    assert list(words) == sorted(set(words))
    assert all(len(w) == 5 and w.isascii() and w.isalpha() and w.islower() for w in words)
    assert wordle.load_vocabulary(wordle.VOCABULARY_PATH) == words


@pytest.mark.parametrize(
    "text, problem",
    [
        ("apple\nbanana\n", "'banana' is not 5"),
        ("apple\nApple\n", "'Apple'"),
        ("apple\ncrane\napple\n", "repeats"),
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
    obs, _ = env.reset(seed=0, options={"word": "apple"})
    assert obs == "Wordle:"
    obs, reward, terminated, truncated, info = env.step("a p p l e")
    assert (obs, reward, terminated, truncated) == ("g g g g g", 0.0, True, False)
    assert info == {"success": True, "invalid_action": False}
    assert env.render() == "Wordle:\na p p l e\ng g g g g\n"
    assert env.prompt() == env.render()


def test_wrong_guess_costs_one_and_surrounding_whitespace_is_stripped():
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "abide"})
    obs, reward, terminated, truncated, info = env.step("  s p e e d \n")
    assert (obs, reward, terminated, truncated) == ("b b y b y", -1.0, False, False)
    assert not info["invalid_action"] and "success" not in info
    assert env.transcript[1].role == AGENT and env.transcript[1].text == "s p e e d"


@pytest.mark.parametrize(
    "guess",
    [
        "apple",  # unspaced
        "z z z z z",  # not in the vocabulary
        "",
        "á p p l e",
        "ａ ｐ ｐ ｌ ｅ",  # full-width letters
        "A P P L E",  # the format is lower case
        "a  p p l e",
        "a p p l e s",
        "a p p l" + " e" * 3000,
    ],
)
def test_invalid_guess_gets_empty_reply_penalty_and_costs_a_try(guess):
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "apple"})
    obs, reward, terminated, truncated, info = env.step(guess)
    assert (obs, reward, terminated, truncated) == ("", -1.0, False, False)
    assert info["invalid_action"]
    assert env.agent_turns == 1
    assert env.transcript[-1].role == ENV and env.transcript[-1].text == ""


def test_invalid_penalty_is_a_setting():
    env = envs.make("wordle", invalid_penalty=-10)
    env.reset(seed=0, options={"word": "apple"})
    assert env.step("apple")[1] == -10.0
    assert env.step("c r a n e")[1] == -1.0


@pytest.mark.parametrize("guess", ["x", "c r a n e"])
def test_six_failed_tries_end_the_episode(guess):
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "apple"})
    for _ in range(5):
        assert not env.step(guess)[2]
    _, _, terminated, truncated, info = env.step(guess)
    assert terminated and not truncated and info["success"] is False
    assert env.done and env.episode_return == -6.0
    assert env.render().count("\n") == 13


def test_pinned_word_must_be_in_the_vocabulary():
    env = envs.make("wordle")
    with pytest.raises(ValueError, match="'zzzzz'"):
        env.reset(seed=0, options={"word": "zzzzz"})


def test_answer_is_drawn_from_the_vocabulary_by_seed():
    env = envs.make("wordle")
    answers = []
    for seed in range(30):
        env.reset(seed=seed)
        answers.append(env.answer)
        env.reset(seed=seed)
        assert env.answer == answers[-1]
    assert set(answers) <= set(wordle.vocabulary())
    assert len(set(answers)) > 20


def test_legal_actions_are_the_spaced_vocabulary():
    env = envs.make("wordle")
    env.reset(seed=0)
    legal = env.legal_actions()
    assert len(legal) == len(wordle.vocabulary())
    assert [wordle.parse_guess(a) for a in legal] == list(wordle.vocabulary())


# -- Policies ------------------------------------------------------------------------


def test_feedback_history_reads_valid_guesses_from_the_transcript():
    env = envs.make("wordle")
    env.reset(seed=0, options={"word": "abide"})
    env.step("s p e e d")
    env.step("nonsense")
    env.step("c r a n e")
    index = wordle.word_index()
    assert wordle.feedback_history(env.transcript) == [
        (index["speed"], wordle.encode_feedback("b b y b y")),
        (index["crane"], wordle.encode_feedback(wordle.feedback("crane", "abide"))),
    ]
    consistent = wordle.consistent_answers(wordle.feedback_history(env.transcript))
    assert consistent[index["abide"]] and not consistent[index["speed"]]


def test_expert_solves_every_word_near_the_paper_maximum():
    env, expert = envs.make("wordle"), envs.policy("wordle", "expert")
    episodes = [play_episode(env, expert, 0, options={"word": w}) for w in wordle.vocabulary()]
    assert all(ep.success and ep.agent_turns <= 6 for ep in episodes)
    assert len({ep.transcript[1].text for ep in episodes}) == 1  # one precomputed opening
    mean_return = np.mean([ep.episode_return for ep in episodes])
    # Measured -1.8825 (2.88 guesses) on our 400 words.
    assert abs(mean_return - PAPER_MAX) < 0.15, mean_return


def test_expert_reads_only_the_transcript():
    env, expert = envs.make("wordle"), envs.policy("wordle", "expert")
    env.reset(seed=0, options={"word": "abide"})
    env.step(expert.act(env, None))
    before = expert.act(env, None)
    env.answer = "zebra"  # what it would guess must not move when the hidden answer does
    assert expert.act(env, None) == before


def test_behaviour_mixture_near_the_paper_dataset_average():
    summary = scripted_summary("wordle", "behaviour", 400)
    # Measured over 2,000 episodes: -4.11, success 0.69, 4.81 turns.
    assert abs(summary.mean_return - PAPER_AVG) < 0.1 * abs(PAPER_AVG), summary
    assert 0.55 < summary.success_rate < 0.85, summary


def test_consistent_part_of_the_mixture_only_guesses_consistent_words():
    env, policy = envs.make("wordle"), wordle.WordleBehaviourPolicy(consistent_prob=1.0)
    rng = np.random.default_rng(0)
    index = wordle.word_index()
    for seed in range(20):
        env.reset(seed=seed)
        while not env.done:
            guess = policy.act(env, rng)
            assert wordle.consistent_answers(wordle.feedback_history(env.transcript))[index[guess[::2]]]
            env.step(guess)
    with pytest.raises(ValueError, match="consistent_prob"):
        wordle.WordleBehaviourPolicy(consistent_prob=1.5)


def test_random_policy_plays_vocabulary_words():
    env, policy = envs.make("wordle"), envs.policy("wordle", "random")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    guesses = {policy.act(env, rng) for _ in range(50)}
    assert guesses <= set(env.legal_actions()) and len(guesses) > 40
