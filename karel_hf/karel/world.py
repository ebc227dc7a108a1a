"""Karel worlds: the grid, the robot, and the three renderings karel_hf uses.

Follows docs/protocol.md §1 and the reference corpora in tests/data/reference/:

- x is the column, y is the row, y grows downward; the outer ring of the grid is wall.
- `World.to_ascii` / `World.from_ascii` speak the authors' JSON-lines format
  (`#` wall, `.` empty, `^ > v <` the robot facing N/E/S/W, a digit = that many markers; the robot
  glyph hides markers under it).
- `World.to_words` renders the interior as the paper's cell words (one row per line, cells
  separated by a space), and `view_codes` as the same cells in a compact integer code
  (`CELL_WORDS[code]` is the word), which is what datasets store.

Pure Python + NumPy (no torch, transformers or datasets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
DIRECTION_NAMES = ("north", "east", "south", "west")
# Unit steps per direction, y grows downward.
DX = (0, 1, 0, -1)
DY = (-1, 0, 1, 0)
ROBOT_CHARS = "^>v<"

MAX_VISIBLE_MARKERS = 9
# Cell vocabulary of the paper's text format; a view code is an index into this tuple.
EMPTY_CODE, WALL_CODE, ROBOT_CODE_OFFSET, MARKER_CODE_OFFSET = 0, 1, 2, 6
ROBOT_WORDS = ("__up__", "__right__", "__down__", "__left__")
CELL_WORDS = (
    "__space__",
    "__wall__",
    *ROBOT_WORDS,
    *(f"__{k}_Marker__" for k in range(1, MAX_VISIBLE_MARKERS + 1)),
)
_WORD_TO_CODE = {word: code for code, word in enumerate(CELL_WORDS)}


class WorldFormatError(ValueError):
    """A world's text or array does not describe a valid Karel world."""


@dataclass
class World:
    """A Karel world: walls and markers over the whole grid (border included) plus the robot.

    `walls` is a (height, width) bool array whose outer ring is True; `markers` a (height, width)
    int array of marker counts; the robot stands on (x, y) facing `direction` (NORTH..WEST).
    """

    walls: np.ndarray
    markers: np.ndarray
    x: int
    y: int
    direction: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def height(self) -> int:
        return self.walls.shape[0]

    @property
    def width(self) -> int:
        return self.walls.shape[1]

    def copy(self) -> World:
        return World(self.walls, self.markers.copy(), self.x, self.y, self.direction)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return (
            (self.x, self.y, self.direction) == (other.x, other.y, other.direction)
            and np.array_equal(self.walls, other.walls)
            and np.array_equal(self.markers, other.markers)
        )

    # ----------------------------------------------------------------- ASCII (reference format)
    @classmethod
    def from_ascii(cls, text: str) -> World:
        """Parse the authors' format; markers under the robot are unknown and read as 0."""
        rows = text.strip("\n").split("\n")
        if len(rows) < 3 or any(len(row) != len(rows[0]) for row in rows) or len(rows[0]) < 3:
            raise WorldFormatError(
                f"world must be a rectangle of at least 3x3 characters, got row lengths "
                f"{[len(row) for row in rows]}"
            )
        height, width = len(rows), len(rows[0])
        walls = np.zeros((height, width), dtype=bool)
        markers = np.zeros((height, width), dtype=np.int16)
        robots = []
        for y, row in enumerate(rows):
            for x, char in enumerate(row):
                if char == "#":
                    walls[y, x] = True
                elif char in ROBOT_CHARS:
                    robots.append((x, y, ROBOT_CHARS.index(char)))
                elif char.isdigit() and char != "0":
                    markers[y, x] = int(char)
                elif char != ".":
                    raise WorldFormatError(
                        f"unexpected character {char!r} at row {y}, column {x}; "
                        "expected one of '#', '.', '^', '>', 'v', '<' or a digit 1-9"
                    )
        if len(robots) != 1:
            raise WorldFormatError(f"world must contain exactly one robot, found {len(robots)}")
        border = np.ones_like(walls)
        border[1:-1, 1:-1] = False
        if not walls[border].all():
            raise WorldFormatError("the outer ring of the world must be wall ('#')")
        x, y, direction = robots[0]
        return cls(walls, markers, x, y, direction)

    def to_ascii(self) -> str:
        grid = np.full(self.walls.shape, ".", dtype="<U1")
        grid[self.walls] = "#"
        counts = self.markers.copy()
        counts[self.y, self.x] = 0  # the robot glyph hides what lies under it
        if counts.max(initial=0) > MAX_VISIBLE_MARKERS:
            self._raise_too_many_markers()
        visible = (counts > 0) & ~self.walls
        grid[visible] = counts[visible].astype(str)
        grid[self.y, self.x] = ROBOT_CHARS[self.direction]
        return "\n".join("".join(row) for row in grid)

    # ----------------------------------------------------------- cell words / codes (model view)
    def view_codes(self) -> np.ndarray:
        """The interior as (height-2, width-2) int8 codes into CELL_WORDS; the robot hides markers."""
        codes = np.where(self.walls, WALL_CODE, EMPTY_CODE).astype(np.int8)
        counts = self.markers
        visible_max = np.where(self.walls, 0, counts)
        visible_max[self.y, self.x] = 0
        if visible_max.max(initial=0) > MAX_VISIBLE_MARKERS:
            self._raise_too_many_markers()
        has = (counts > 0) & ~self.walls
        codes[has] = (MARKER_CODE_OFFSET - 1 + counts[has]).astype(np.int8)
        codes[self.y, self.x] = ROBOT_CODE_OFFSET + self.direction
        return codes[1:-1, 1:-1]

    @classmethod
    def from_view_codes(cls, codes: np.ndarray) -> World:
        """Inverse of `view_codes` (markers under the robot read as 0)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.min(initial=0) < 0 or codes.max(initial=0) >= len(CELL_WORDS):
            raise WorldFormatError(
                f"view codes must be a 2-D array of ints in [0, {len(CELL_WORDS)}), got shape "
                f"{codes.shape} with range [{codes.min(initial=0)}, {codes.max(initial=0)}]"
            )
        height, width = codes.shape[0] + 2, codes.shape[1] + 2
        walls = np.ones((height, width), dtype=bool)
        walls[1:-1, 1:-1] = codes == WALL_CODE
        markers = np.zeros((height, width), dtype=np.int16)
        is_marker = codes >= MARKER_CODE_OFFSET
        markers[1:-1, 1:-1][is_marker] = codes[is_marker] - MARKER_CODE_OFFSET + 1
        robot = np.argwhere((codes >= ROBOT_CODE_OFFSET) & (codes < MARKER_CODE_OFFSET))
        if len(robot) != 1:
            raise WorldFormatError(f"view must contain exactly one robot cell, found {len(robot)}")
        y, x = robot[0]
        return cls(walls, markers, int(x) + 1, int(y) + 1, int(codes[y, x]) - ROBOT_CODE_OFFSET)

    def to_words(self) -> str:
        """The paper's rendering: one line per interior row, cell words separated by a space."""
        return codes_to_words(self.view_codes())

    @classmethod
    def from_words(cls, text: str) -> World:
        return cls.from_view_codes(words_to_codes(text))

    def _raise_too_many_markers(self):
        raise WorldFormatError(
            f"a cell holds more than {MAX_VISIBLE_MARKERS} markers, which the text formats cannot show"
        )


def codes_to_words(codes: np.ndarray) -> str:
    return "\n".join(" ".join(CELL_WORDS[c] for c in row) for row in np.asarray(codes).tolist())


def words_to_codes(text: str) -> np.ndarray:
    rows = [row.split() for row in text.strip("\n").split("\n")]
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise WorldFormatError("a grid must have the same number of cells in every row")
    try:
        return np.array([[_WORD_TO_CODE[w] for w in row] for row in rows], dtype=np.int8)
    except KeyError as err:
        raise WorldFormatError(f"unknown cell word {err.args[0]!r}; expected one of {CELL_WORDS}") from None
