"""Synthetic scenes for the quickstart: coloured shapes and rendered words on a 3×3 grid, and questions about them.

A :class:`Scene` is pure data (what is where); :func:`render_scene` draws it with PIL (the default FreeType font,
nothing downloaded), and the question functions turn it into short-answer, multiple-choice and yes/no questions
whose answers follow from the scene. Words come in three sizes: ``large`` and ``medium`` text stays legible at a
quarter of the canvas resolution; ``small`` text (about 4 pixels tall on a 128-pixel canvas) is legible only at full
resolution, which is what the pyramid-vs-single experiment measures. Everything is drawn from one
``random.Random``, so a seed fixes every image and question.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

COLORS = {"red": (220, 30, 30), "green": (20, 150, 40), "blue": (30, 70, 230), "yellow": (235, 195, 0),
          "purple": (140, 40, 180), "orange": (245, 125, 0), "black": (20, 20, 20)}  # fmt: skip
TEXT_COLORS = ["red", "green", "blue", "purple", "orange", "black"]  # legible on a light background
SHAPES = ["circle", "square", "triangle", "star", "cross"]
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
# The closed vocabulary of rendered words: four letters each, so a blurred word's length gives nothing away.
VOCABULARY = ("lamp fish door book tree kite moon boat frog bell cake drum gold ring rose sock vase wolf milk nest "
              "pear salt corn leaf").split()  # fmt: skip
# Font pixel size per text size on a 128-pixel canvas (scaled with the canvas).
TEXT_SIZES = {"large": 18, "medium": 13, "small": 7}
BASE_SIZE = 128


@dataclass(frozen=True)
class Item:
    """A shape (``kind`` in :data:`SHAPES`) or a word (``kind == "word"``) in one cell of the 3×3 grid."""

    kind: str
    color: str
    cell: int
    text: str = ""
    text_size: str = ""
    jitter: tuple[float, float] = (0.0, 0.0)  # offset from the cell centre, in cell widths
    scale: float = 1.0

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def is_word(self) -> bool:
        return self.kind == "word"


@dataclass(frozen=True)
class Scene:
    items: tuple[Item, ...]
    background: tuple[int, int, int] = (255, 255, 255)

    @property
    def shapes(self) -> list[Item]:
        return [item for item in self.items if not item.is_word]

    @property
    def words(self) -> list[Item]:
        return [item for item in self.items if item.is_word]

    def ocr_tokens(self) -> list[str]:
        """The words in reading order (top to bottom, left to right), as an OCR system would list them."""
        return [item.text for item in sorted(self.words, key=lambda item: item.cell)]


@dataclass
class SceneSpec:
    """How many shapes and words a random scene has, and which text sizes its words use."""

    shapes: tuple[int, int] = (1, 4)
    words: tuple[int, int] = (0, 2)
    text_sizes: tuple[str, ...] = ("large", "medium", "small")
    word_colors: list[str] = field(default_factory=lambda: list(TEXT_COLORS))


def random_scene(rng: random.Random, spec: SceneSpec | None = None) -> Scene:
    """Shapes and words in distinct cells; word colours are distinct within a scene (questions name words by colour)."""
    spec = spec or SceneSpec()
    shape_count, word_count = rng.randint(*spec.shapes), rng.randint(*spec.words)
    cells = rng.sample(range(9), shape_count + word_count)
    items = []
    for cell in cells[:shape_count]:
        jitter = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
        items.append(Item(rng.choice(SHAPES), rng.choice(list(COLORS)), cell, jitter=jitter,
                          scale=rng.uniform(0.9, 1.1)))  # fmt: skip
    word_colors = rng.sample(spec.word_colors, word_count)
    for cell, color in zip(cells[shape_count:], word_colors):
        jitter = (rng.uniform(-0.03, 0.03), rng.uniform(-0.08, 0.08))
        size = rng.choice(spec.text_sizes)
        items.append(Item("word", color, cell, rng.choice(VOCABULARY), size, jitter))
    tint = rng.randint(235, 255)
    return Scene(tuple(items), (tint, tint, rng.randint(235, 255)))


def _font(pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=pixels)


def _star(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    import math

    points = []
    for k in range(10):
        angle = -math.pi / 2 + k * math.pi / 5
        r = radius if k % 2 == 0 else radius * 0.45
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, color) -> None:
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        inner = radius * 0.85
        draw.rectangle([cx - inner, cy - inner, cx + inner, cy + inner], fill=color)
    elif kind == "triangle":
        draw.polygon(
            [(cx, cy - radius), (cx + radius, cy + radius * 0.8), (cx - radius, cy + radius * 0.8)], fill=color
        )
    elif kind == "star":
        draw.polygon(_star(cx, cy, radius * 1.15), fill=color)
    elif kind == "cross":
        arm = radius * 0.35
        draw.rectangle([cx - radius, cy - arm, cx + radius, cy + arm], fill=color)
        draw.rectangle([cx - arm, cy - radius, cx + arm, cy + radius], fill=color)
    else:
        raise ValueError(f"unknown shape {kind!r}; valid: {', '.join(SHAPES)}")


def render_scene(scene: Scene, size: int = BASE_SIZE) -> Image.Image:
    """The scene as a ``size``×``size`` RGB image (cells are a third of the side each)."""
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for item in scene.items:
        row, col = divmod(item.cell, 3)
        cx = (col + 0.5 + item.jitter[0]) * cell
        cy = (row + 0.5 + item.jitter[1]) * cell
        if item.is_word:
            font = _font(max(1, round(TEXT_SIZES[item.text_size] * size / BASE_SIZE)))
            draw.text((cx, cy), item.text, fill=COLORS[item.color], font=font, anchor="mm")
        else:
            _draw_shape(draw, item.kind, cx, cy, cell * 0.32 * item.scale, COLORS[item.color])
    return image


# --- Descriptions and questions --------------------------------------------------------------------------------


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe_item(item: Item) -> str:
    if item.is_word:
        return f"the word {item.text} in {item.color} at the {item.position}"
    return f"{article(item.color)} {item.color} {item.kind} at the {item.position}"


def caption(scene: Scene) -> str:
    """One sentence naming every item in reading order."""
    parts = [describe_item(item) for item in sorted(scene.items, key=lambda item: item.cell)]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class QA:
    """A question with its answer; ``category`` names the skill (MMBench-style), ``choices`` the answer space."""

    question: str
    answer: str
    category: str
    choices: tuple[str, ...]


COUNT_CHOICES = ("1", "2", "3", "4", "5")


def _unique(items: list[Item], key) -> list[Item]:
    """Items whose ``key`` value no other item shares (so a question naming it is unambiguous)."""
    values = [key(item) for item in items]
    return [item for item, value in zip(items, values) if values.count(value) == 1]


def shape_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Every unambiguous colour / shape / position / count question about the scene's shapes."""
    shapes, questions = scene.shapes, []
    for item in _unique(shapes, lambda i: i.kind):
        questions.append(QA(f"What color is the {item.kind}?", item.color, "color", tuple(COLORS)))
    for item in shapes:
        questions.append(QA(f"What shape is at the {item.position}?", item.kind, "shape", tuple(SHAPES)))
    for item in _unique(shapes, lambda i: (i.color, i.kind)):
        questions.append(QA(f"Where is the {item.color} {item.kind}?", item.position, "position", tuple(POSITIONS)))
    if shapes:
        questions.append(QA("How many shapes are there?", str(len(shapes)), "count", COUNT_CHOICES))
    return questions


def word_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Reading questions: a word named by its colour, its position, or the only word; and a word's colour."""
    words, questions = scene.words, []
    vocabulary = tuple(VOCABULARY)
    if len(words) == 1:
        questions.append(QA("What word is written in the image?", words[0].text, "ocr", vocabulary))
    for item in words:
        questions.append(QA(f"What word is written in {item.color}?", item.text, "ocr", vocabulary))
        questions.append(QA(f"What is written at the {item.position}?", item.text, "ocr", vocabulary))
    for item in _unique(words, lambda i: i.text):
        questions.append(QA(f"What color is the word {item.text}?", item.color, "color", tuple(TEXT_COLORS)))
    return questions


def presence_question(scene: Scene, rng: random.Random, adversarial: bool = False) -> QA:
    """ "Is there a <color> <shape> in the image?", true or false with equal chance (POPE-style). ``adversarial``
    negatives share the colour or the shape of something present (POPE's "adversarial" split)."""
    present = {(item.color, item.kind) for item in scene.shapes}
    if present and rng.random() < 0.5:
        color, kind = rng.choice(sorted(present))
        answer = "Yes"
    else:
        absent = [(c, k) for c in COLORS for k in SHAPES if (c, k) not in present]
        near = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in present)]
        color, kind = rng.choice(near if adversarial and near else absent)
        answer = "No"
    return QA(f"Is there {article(color)} {color} {kind} in the image?", answer, "presence", ("Yes", "No"))


def multiple_choice(qa: QA, rng: random.Random, count: int = 4) -> tuple[list[str], str]:
    """``count`` options (the answer and random distractors, shuffled) and the answer's letter."""
    distractors = rng.sample([c for c in qa.choices if c != qa.answer], count - 1)
    options = distractors + [qa.answer]
    rng.shuffle(options)
    return options, "ABCDE"[options.index(qa.answer)]


OPPOSITES = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def text_only_qa(rng: random.Random) -> QA:
    """A question that needs no image (LLaVA's mix keeps some text-only conversations)."""
    kind = rng.randrange(3)
    if kind == 0:
        word = rng.choice(list(OPPOSITES))
        return QA(f"What is the opposite of {word}?", OPPOSITES[word], "fact", tuple(OPPOSITES))
    if kind == 1:
        a, b = rng.randint(0, 4), rng.randint(0, 4)
        return QA(f"How much is {a} plus {b}?", str(a + b), "fact", tuple(str(n) for n in range(9)))
    word = rng.choice(list(COLORS) + SHAPES + VOCABULARY)
    return QA(f"Is {word} a color?", "Yes" if word in COLORS else "No", "fact", ("Yes", "No"))


def reading_qa(rng: random.Random) -> tuple[QA, list[str]]:
    """A question answered from a "Reference OCR token" list alone: the only word, or the one word that names a
    colour or a shape among vocabulary words. Returns the question and the OCR tokens."""
    if rng.random() < 0.5:
        word = rng.choice(VOCABULARY)
        return QA("What word is written in the image?", word, "ocr", tuple(VOCABULARY)), [word]
    kind = rng.choice(["color", "shape"])
    answer = rng.choice(list(COLORS) if kind == "color" else SHAPES)
    tokens = rng.sample(VOCABULARY, rng.randint(1, 2))
    tokens.insert(rng.randint(0, len(tokens)), answer)
    return QA(f"Which word names a {kind}?", answer, "ocr", tuple(tokens)), tokens
