"""dreamgym: World Models (Ha & Schmidhuber 2018) as Gymnasium environments."""

from dreamgym.envs import registration  # noqa: F401  (registers the dreamgym/... Gymnasium ids)
from dreamgym.games import GAMES, GameSpec, get_game, register_game

__version__ = "0.1.0"
__all__ = ["GAMES", "GameSpec", "get_game", "register_game", "__version__"]
