"""Chess as White against a strength-limited Stockfish (LMRL-Gym's chess task).

    env = ChessEnv()
    observation, info = env.reset(seed=0)   # 'r n b q k b n r / p p p p ... w   K Q k q   -   0   1'
    observation, reward, terminated, truncated, info = env.step("e 4")
    env.close()                              # ends the Stockfish process

Formats (the source's, LMRL-Gym `preprocess_state` / `preprocess_move`):
- Observation: the current position's FEN (python-chess `Board.fen()`, move counters
  included) with a space between every two characters. The FEN's own field separators
  are characters too, so a field boundary reads as three spaces: `... R   w   K Q k q   -   0   1`.
  `unspaced(observation)` (every other character) gives the FEN back.
- Action: a move in SAN with a space between every two characters (`N f 3`, `e x d 5`,
  `O - O`, `e 8 = Q +`); `legal_actions()` and the scripted policies write exactly this,
  check and mate marks included. Reading is lenient where the move is unambiguous: all
  whitespace is dropped and the rest goes to python-chess's SAN parser, so the marks `+`
  and `#` are optional (and not checked), `x` is optional, `0-0` reads as `O-O`, and a
  move with its full origin (`N g 1 f 3`, `e 2 e 4`) is accepted. Letters are
  case-sensitive (`b 4` is a pawn move, `B b 4` a bishop's); a null move (`- -`) is invalid.

Rewards: +1 for White's checkmating move (success), -1 when the opponent checkmates,
-1 for an illegal or unreadable move (the board stays and the game goes on), 0 otherwise;
stalemate, insufficient material, the 75-move rule and fivefold repetition end the game
with 0. The cap is the source's: it counts every agent turn, invalid ones included, and
ends the game after the turn that takes the count past `max_moves` = 400
(`num_moves_made > max_moves`, llm_rl_scripts/chess/env/env.py:238-240). That 401st turn
is played and scored like any other, so 401 illegal moves return -401, the paper's m.

The opponent is our own seeded weakening of Stockfish, not its UCI_LimitStrength (whose
random generator is seeded from the clock): Stockfish ranks its best `opponent_multipv`
moves at `opponent_nodes` nodes and the reply is drawn from a softmax over their
centipawn scores at `opponent_temperature_cp`, with the episode's generator. With one
thread, a node limit and a cleared hash at each reset, a seed fixes the game.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

import chess
import chess.engine
import numpy as np

from lmrl_ray.envs.base import (
    ScriptedPolicy,
    TextEnv,
    UniformLegalPolicy,
    current_observation,
)

logger = logging.getLogger(__name__)

STOCKFISH_ENV_VAR = "LMRL_STOCKFISH"
_DEBIAN_STOCKFISH = "/usr/games/stockfish"
_INSTALL_HINT = (
    "install Stockfish (Debian/Ubuntu: `apt-get install stockfish`, macOS: `brew install stockfish`) "
    f"or set {STOCKFISH_ENV_VAR} to the engine's path"
)

INVALID_MOVE_REWARD = -1.0
WIN_REWARD = 1.0
LOSS_REWARD = -1.0

# Mate scores in centipawns for the softmax: far above any material score even for the
# longest mates Stockfish reports, and each move longer to mate costs 10 pawns, so every
# temperature we use prefers the shortest mate in view (and a lone king the longest
# defence) instead of wandering between mates.
MATE_CP = 1_000_000
MATE_STEP_CP = 1_000


def find_stockfish(path: str | None = None) -> str:
    """The Stockfish binary: `path`, else $LMRL_STOCKFISH, else `stockfish` on PATH, else
    Debian's /usr/games/stockfish (not on every user's PATH)."""
    if path is None:
        path = os.environ.get(STOCKFISH_ENV_VAR) or shutil.which("stockfish") or _DEBIAN_STOCKFISH
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"Stockfish not found at {path!r}: {_INSTALL_HINT}")
    return str(path)


def _popen_stockfish(path: str) -> chess.engine.SimpleEngine:
    """Start the engine from a daemon thread.

    python-chess runs each engine's event loop on a new thread, which inherits the
    daemon flag of the thread that creates it; a non-daemon one would keep the
    interpreter from exiting when someone forgets close(). Stockfish itself quits when
    our end of its stdin closes, so nothing outlives the process.
    """
    result: dict[str, Any] = {}

    def start() -> None:
        try:
            result["engine"] = chess.engine.SimpleEngine.popen_uci(path)
        except BaseException as exc:  # re-raised in the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=start, name="stockfish-start", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["engine"]


def centipawns(score: chess.engine.Score) -> int:
    """A score as centipawns for the side it is relative to; mates per MATE_CP/MATE_STEP_CP."""
    mate = score.mate()
    if mate is None:
        return int(score.score())
    if mate > 0:
        return MATE_CP - MATE_STEP_CP * mate
    return -MATE_CP - MATE_STEP_CP * mate  # mate < 0: being mated, later is better


def softmax_choice(scores_cp: np.ndarray, temperature_cp: float, rng: np.random.Generator) -> int:
    """Index drawn with probability proportional to exp(score / temperature); argmax at 0."""
    if temperature_cp <= 0 or len(scores_cp) == 1:
        return int(np.argmax(scores_cp))
    logits = (scores_cp - scores_cp.max()) / temperature_cp
    p = np.exp(logits)
    return int(rng.choice(len(p), p=p / p.sum()))


class Engine:
    """One Stockfish process whose searches are a function of the positions searched.

    Threads=1, a fixed hash size and node or depth limits make a search deterministic;
    `new_game()` makes the next search send `ucinewgame`, which clears the hash and the
    history tables, so each episode's searches do not depend on earlier episodes.
    """

    def __init__(self, path: str | None = None, *, hash_mb: int = 16):
        self.path = find_stockfish(path)
        self._engine = _popen_stockfish(self.path)
        # Quits the process if the owner is garbage-collected without close().
        self._finalizer = weakref.finalize(self, self._engine.close)
        self._engine.configure({"Threads": 1, "Hash": hash_mb})
        self._game = object()

    @property
    def name(self) -> str:
        return self._engine.id.get("name", "Stockfish")

    @property
    def pid(self) -> int:
        return self._engine.transport.get_pid()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def new_game(self) -> None:
        """Clear the engine's memory before the next search (python-chess sends
        `ucinewgame` when the `game` token changes)."""
        self._game = object()

    def ranked_moves(self, board: chess.Board, *, nodes: int, multipv: int = 1) -> list[tuple[chess.Move, int]]:
        """The best `multipv` moves at `nodes` nodes with their centipawn scores for the
        side to move, best first."""
        infos = self._analyse(board, chess.engine.Limit(nodes=nodes), multipv=multipv)
        ranked = [(info["pv"][0], centipawns(info["score"].relative)) for info in infos if info.get("pv")]
        if not ranked:
            raise RuntimeError(f"Stockfish returned no move for {board.fen()!r}")
        return ranked

    def best_move(self, board: chess.Board, *, nodes: int) -> chess.Move:
        return self.ranked_moves(board, nodes=nodes)[0][0]

    def sample_move(
        self, board: chess.Board, rng: np.random.Generator, *, nodes: int, multipv: int, temperature_cp: float
    ) -> chess.Move:
        """A move drawn by softmax over the scores of the engine's best `multipv` moves."""
        ranked = self.ranked_moves(board, nodes=nodes, multipv=multipv)
        scores = np.array([score for _, score in ranked], dtype=float)
        return ranked[softmax_choice(scores, temperature_cp, rng)][0]

    def mate_in(self, board: chess.Board, *, depth: int) -> int | None:
        """Moves to mate for White that a fresh search to `depth` plies reports, else None."""
        self.new_game()
        return self._analyse(board, chess.engine.Limit(depth=depth))["score"].white().mate()

    def _analyse(self, board: chess.Board, limit: chess.engine.Limit, **kwargs: Any) -> Any:
        if self.closed:
            raise RuntimeError("the Stockfish engine is closed")
        return self._engine.analyse(board, limit, game=self._game, **kwargs)

    def close(self) -> None:
        """End the process; closing twice is fine."""
        self._finalizer()


# -- Text formats -------------------------------------------------------------------


def spaced(text: str) -> str:
    """`text` with a space between every two characters: `Nf3` -> `N f 3`."""
    return " ".join(text)


def unspaced(observation: str) -> str:
    """The inverse of `spaced` (every other character)."""
    return observation[::2]


def move_text(board: chess.Board, move: chess.Move) -> str:
    """A move as the agent writes it: spaced SAN with check and mate marks."""
    return spaced(board.san(move))


def parse_move(board: chess.Board, action: str) -> chess.Move | None:
    """The legal move `action` names in `board`, or None (see the module docstring)."""
    san = "".join(action.split())
    try:
        move = board.parse_san(san)
    except ValueError:
        return None
    return None if move == chess.Move.null() else move


def start_board(fen: str, task: str) -> chess.Board:
    """The board of a pinned start position; a FEN the agent cannot play from raises."""
    try:
        board = chess.Board(fen)
    except ValueError as exc:
        raise ValueError(f"{task}: invalid FEN {fen!r}: {exc}") from None
    if not board.is_valid():
        raise ValueError(f"{task}: illegal position in FEN {fen!r} ({board.status()!r})")
    if board.turn != chess.WHITE:
        raise ValueError(f"{task}: FEN {fen!r} has Black to move; the agent plays White")
    if board.outcome() is not None:
        raise ValueError(f"{task}: the game is already over in FEN {fen!r}")
    return board


# -- The environment ----------------------------------------------------------------


class ChessEnv(TextEnv):
    """Chess as White against a seeded, strength-limited Stockfish.

    Options: `fen` pins the start position (White to move, game not over); without it
    the game starts from the initial position. The policy sees the current board only.
    The environment owns one Stockfish process, started here and ended by `close()`;
    the scripted policies search with it too (`env.engine`).
    """

    task = "chess"
    option_names = ("fen",)
    view = staticmethod(current_observation)

    def __init__(
        self,
        *,
        opponent_nodes: int = 2_000,
        opponent_multipv: int = 5,
        opponent_temperature_cp: float = 100.0,
        max_moves: int = 400,
        stockfish_path: str | None = None,
        render_mode: str | None = None,
    ):
        """
        opponent_nodes: nodes Stockfish searches for each reply.
        opponent_multipv: how many of its best moves the reply is drawn from.
        opponent_temperature_cp: softmax temperature over their scores, in centipawns
            (0 = always the best; 100 = a move 1 pawn worse is e times less likely).
            The default is what `temperature_for_elo` calls Elo 1350, the strength
            Stockfish 15.1 gave the source's opponent.
        max_moves: the source's cap (400): the game ends after the agent turn that takes
            the count of agent turns, invalid ones included, past it, so it lasts at most
            max_moves + 1 turns (401, the paper's m = -401).
        stockfish_path: the engine binary; default `find_stockfish()`.
        """
        if max_moves < 0:
            raise ValueError(f"{self.task}: max_moves must be at least 0, got {max_moves}")
        super().__init__(max_agent_turns=max_moves + 1, render_mode=render_mode)
        self.max_moves = max_moves
        if opponent_nodes < 1 or opponent_multipv < 1 or opponent_temperature_cp < 0:
            raise ValueError(
                f"{self.task}: need opponent_nodes >= 1, opponent_multipv >= 1 and opponent_temperature_cp >= 0; "
                f"got {opponent_nodes}, {opponent_multipv}, {opponent_temperature_cp}"
            )
        self.opponent_nodes = opponent_nodes
        self.opponent_multipv = opponent_multipv
        self.opponent_temperature_cp = opponent_temperature_cp
        self.board = chess.Board()
        self.engine = Engine(stockfish_path)

    def _start_position(self) -> chess.Board:
        """The board an episode starts from when no `fen` option pins one."""
        return chess.Board()

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.board = start_board(options["fen"], self.task) if "fen" in options else self._start_position()
        self.engine.new_game()
        return spaced(self.board.fen()), {"fen": self.board.fen()}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        move = parse_move(self.board, action)
        if move is None:
            return spaced(self.board.fen()), INVALID_MOVE_REWARD, False, {"invalid_action": True}
        info: dict[str, Any] = {"move": self.board.san(move)}
        self.board.push(move)
        outcome = self.board.outcome()
        if outcome is None:
            reply = self.engine.sample_move(
                self.board,
                self.np_random,
                nodes=self.opponent_nodes,
                multipv=self.opponent_multipv,
                temperature_cp=self.opponent_temperature_cp,
            )
            info["opponent_move"] = self.board.san(reply)
            self.board.push(reply)
            outcome = self.board.outcome()
        reward = 0.0
        if outcome is not None:
            info["outcome"] = outcome.termination.name.lower()
            info["success"] = outcome.winner == chess.WHITE
            if outcome.winner is not None:
                reward = WIN_REWARD if outcome.winner == chess.WHITE else LOSS_REWARD
        return spaced(self.board.fen()), reward, outcome is not None, info

    def legal_actions(self) -> list[str]:
        return [move_text(self.board, move) for move in self.board.legal_moves]

    def close(self) -> None:
        self.engine.close()
        super().close()


# -- Scripted policies (they search with the environment's engine) -------------------


def temperature_for_elo(elo: float) -> float:
    """Our nominal Elo scale: the softmax temperature (cp) standing for a rating.

    T(elo) = 100 * 2 ** ((1350 - elo) / 200): 1350 (the source's opponent) is the
    opponent's default 100 cp, and every 200 points halve or double it (800 -> 673 cp,
    1600 -> 42 cp). The Elo numbers are labels for reading the data, not a calibration
    against rated players.
    """
    return 100.0 * 2.0 ** ((1350.0 - elo) / 200.0)


def engine_of(env: TextEnv) -> Engine:
    """The Stockfish process of a chess environment, which the scripted policies share."""
    engine = getattr(env, "engine", None)
    if not isinstance(engine, Engine):
        raise TypeError(f"{env.task}: this policy needs a chess environment with a Stockfish engine")
    return engine


class StockfishPolicy(ScriptedPolicy):
    """The expert: Stockfish's best move at `nodes` nodes, no noise (the normalisation maximum)."""

    def __init__(self, *, nodes: int = 20_000):
        self.nodes = nodes

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        move = engine_of(env).best_move(env.board, nodes=self.nodes)
        return move_text(env.board, move)


class ChessBehaviourPolicy(ScriptedPolicy):
    """The data policy: Stockfish playing White at a strength drawn per episode.

    Each episode draws a nominal Elo uniformly from `elo_range` (the paper's 800-1600)
    and plays like the opponent, a softmax over the best `multipv` moves at `nodes`
    nodes, at `temperature_for_elo(elo)`. The drawn Elo is in `self.elo`.
    """

    def __init__(self, *, elo_range: tuple[float, float] = (800.0, 1600.0), nodes: int = 2_000, multipv: int = 5):
        self.elo_range = elo_range
        self.nodes = nodes
        self.multipv = multipv
        self.elo = float(np.mean(elo_range))

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        self.elo = float(rng.uniform(*self.elo_range))

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        move = engine_of(env).sample_move(
            env.board, rng, nodes=self.nodes, multipv=self.multipv, temperature_cp=temperature_for_elo(self.elo)
        )
        return move_text(env.board, move)


__all__ = [
    "ChessBehaviourPolicy",
    "ChessEnv",
    "Engine",
    "StockfishPolicy",
    "UniformLegalPolicy",
    "engine_of",
    "find_stockfish",
    "move_text",
    "parse_move",
    "spaced",
    "temperature_for_elo",
    "unspaced",
]
