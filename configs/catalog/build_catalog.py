#!/usr/bin/env python3
"""Builds configs/catalog/flan2022_tasks.csv from the released Flan collection task list.

    python configs/catalog/build_catalog.py                 # rebuild the committed catalog
    python configs/catalog/build_catalog.py --check         # fail if the committed file is stale
    python configs/catalog/build_catalog.py --niv2_dir DIR  # exact NIv2 counts from a local clone

Input: ../shared/data/flan/flan_collection_info.csv (1,945 rows: Source, Dataset, Specific Task
Category, Generic Task Category, Languages). Everything the CSV does not carry (loader specs, example
counts, abilities, the paper's counting rules) is written down below as data, with its source. The
output is deterministic: the same inputs give a byte-identical file. See README.md next to this file
for every decision and every place where the CSV and the paper disagree.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import re
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from flan_mix.data.flan import catalog as cat  # noqa: E402  (pure python, no TensorFlow)

DEFAULT_INPUT = REPO.parent / "shared" / "data" / "flan" / "flan_collection_info.csv"
DEFAULT_OUTPUT = HERE / "flan2022_tasks.csv"
CSV_HEADER = ["Source", "Dataset", "Specific Task Category", "Generic Task Category", "Languages"]

# Sources of published figures, referred to in count notes.
REF_P3 = "P3 sizes in FLAN constants_t0.py"
REF_HFC = "TFDS community catalog, huggingface:{}"
REF_COT = "TSV line count in FLAN task_configs.py (nlines)"
UNVERIFIED_SLICE = "slice {split}; full split assumed >= the slice, not verified offline (README: Example counts)"

# ---------------------------------------------------------------------------------------------
# Muffin / Flan 2021 tasks: TFDS loader specs (names, splits and features as in the released
# FLAN v2 task configs, versions pinned to ones tensorflow-datasets 4.9 can build) and counts.
# (task name, CSV dataset, tfds name, split, field map, count, count source, count note)
# A field map item "x" means "x=x"; "a=b/c" maps the nested TFDS feature b/c to output field a.

FLAN2021 = [
    ("aeslc", "aeslc", "aeslc:1.0.0", "train", "email_body;subject_line",
     14436, "estimate", "full train split; 14,436 is the AESLC paper's train size, recalled, not verified offline"),
    ("ag_news_subset", "ag_news_subset", "ag_news_subset:1.0.0", "train[:30000]", "title;description;label",
     30000, "derived", "train[:30000] of 120,000 (" + REF_P3 + ")"),
    ("anli_r1", "anli_r1", "anli/r1:0.1.0", "train", "context;hypothesis;label",
     16946, "published", "full train split (" + REF_P3 + ")"),
    ("anli_r2", "anli_r2", "anli/r2:0.1.0", "train[:30000]", "context;hypothesis;label",
     30000, "derived", "train[:30000] of 45,460 (" + REF_P3 + ")"),
    ("anli_r3", "anli_r3", "anli/r3:0.1.0", "train[:30000]", "context;hypothesis;label",
     30000, "derived", "train[:30000] of 100,459 (" + REF_P3 + ")"),
    ("arc_challenge", "arc_challenge", "ai2_arc/ARC-Challenge:1.0.0", "train[:-200]",
     "question;choices_text=choices/text;choices_label=choices/label;answerKey",
     919, "derived", "train[:-200] of 1,119 (" + REF_P3 + "); FLAN also keeps only 4-option questions"),
    ("arc_easy", "arc_easy", "ai2_arc/ARC-Easy:1.0.0", "train[:-200]",
     "question;choices_text=choices/text;choices_label=choices/label;answerKey",
     2051, "derived", "train[:-200] of 2,251 (" + REF_P3 + "); FLAN also keeps only 4-option questions"),
    ("bool_q", "bool_q", "bool_q:1.0.0", "train[:-200]", "title;passage;question;answer",
     9227, "derived", "train[:-200] of 9,427 (" + REF_P3 + ", super_glue boolq)"),
    ("cb", "cb", "super_glue/cb:1.0.2", "train[:-50]", "premise;hypothesis;label",
     200, "derived", "train[:-50] of 250 (" + REF_P3 + ")"),
    ("cnn_dailymail", "cnn_dailymail", "cnn_dailymail:3.4.0", "train[:30000]", "article;highlights",
     30000, "derived", "train[:30000] of 287,113 (" + REF_P3 + ")"),
    ("cola", "cola", "glue/cola:2.0.0", "train[:-200]", "sentence;label",
     8351, "derived", "train[:-200] of 8,551 (" + REF_HFC.format("glue/cola") + ")"),
    ("common_gen", "common_gen", "gem/common_gen:1.1.0", "train[:30000]", "concepts;target;references",
     30000, "derived", "train[:30000] of 67,389 (" + REF_P3 + ")"),
    ("copa", "copa", "super_glue/copa:1.0.2", "train[:-50]", "premise;choice1;choice2;question;label",
     350, "derived", "train[:-50] of 400 (" + REF_P3 + ")"),
    ("coqa", "coqa", "coqa:1.0.0", "train[:-100]", "story;questions;answers=answers/input_text",
     7099, "derived", "train[:-100] of 7,199 (" + REF_HFC.format("coqa") + ")"),
    ("cosmos_qa", "cosmos_qa", "cosmos_qa:1.0.0", "train[:-200]",
     "context;question;answer0;answer1;answer2;answer3;label",
     25062, "derived", "train[:-200] of 25,262 (" + REF_P3 + ")"),
    ("dart", "dart", "gem/dart:1.1.0", "train[:30000]", "tripleset;target;references",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("definite_pronoun_resolution", "definite_pronoun_resolution", "definite_pronoun_resolution:1.1.0",
     "train[:-200]", "sentence;pronoun;candidates;label",
     1122, "derived", "train[:-200] of 1,322 (HF dataset card community-datasets/definite_pronoun_resolution)"),
    ("drop", "drop", "drop:2.0.0", "train[:30000]", "passage;question;answer",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("e2e_nlg", "e2e_nlg", "gem/e2e_nlg:1.1.0", "train[:30000]", "meaning_representation;target;references",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("fix_punct", "fix_punct", "para_crawl/enda:1.2.0", "train[30200:60200]", "en",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[30200:60200]") + " FLAN drops sentences without punctuation."),
    ("gigaword", "gigaword", "gigaword:1.2.0", "train[:30000]", "document;summary",
     30000, "derived", "train[:30000] of 3,803,957 (" + REF_P3 + ")"),
    ("glue_mrpc", "glue_mrpc", "glue/mrpc:2.0.0", "train[:-200]", "sentence1;sentence2;label",
     3468, "derived", "train[:-200] of 3,668 (" + REF_P3 + ")"),
    ("glue_qqp", "glue_qqp", "glue/qqp:2.0.0", "train[:30000]", "question1;question2;label",
     30000, "derived", "train[:30000] of 363,846 (" + REF_P3 + ")"),
    ("hellaswag", "hellaswag", "hellaswag:1.1.0", "train[:30000]", "context;endings;activity_label;label",
     30000, "derived", "train[:30000] of 39,905 (" + REF_P3 + ")"),
    ("imdb_reviews", "imdb_reviews", "imdb_reviews/plain_text:1.0.0", "train[:-200]", "text;label",
     24800, "derived", "train[:-200] of 25,000 (" + REF_P3 + ")"),
    ("lambada", "lambada", "lambada:1.0.0", "train", "passage",
     4869, "estimate", "TFDS 'train' is the LAMBADA development set; 4,869 passages recalled from the LAMBADA paper, not verified offline"),
    ("math_dataset", "math_dataset", "math_dataset/algebra__linear_1d:1.0.0", "train[:30000]", "question;answer",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("mnli_matched", "mnli", "glue/mnli:2.0.0", "train[:30000]", "premise;hypothesis;label",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("mnli_mismatched", "mnli", "glue/mnli:2.0.0", "train[:30000]", "premise;hypothesis;label",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("multi_news", "multi_news", "multi_news:2.1.0", "train[:30000]", "document;summary",
     30000, "derived", "train[:30000] of 44,972 (" + REF_P3 + ")"),
    ("multirc", "multirc", "super_glue/multirc:1.0.2", "train[:-200]", "paragraph;question;answer;label",
     27043, "derived", "train[:-200] of 27,243 (" + REF_P3 + ")"),
    ("natural_questions", "natural_questions", "natural_questions_open:1.0.0", "train[:30000]", "question;answer",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("newsroom", "newsroom", "newsroom:1.0.0", "train[:30000]", "text;title;summary",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("openbookqa", "openbookqa", "openbookqa:0.1.0", "train",
     "question=question/stem;choice_A=question/choice_A;choice_B=question/choice_B;"
     "choice_C=question/choice_C;choice_D=question/choice_D;fact1;answerKey",
     4957, "published", "full train split (" + REF_P3 + ")"),
    ("opinion_abstracts_idebate", "opinion_abstracts_idebate", "opinion_abstracts/idebate:1.0.0", "train[:-600]",
     "debate_name=_debate_name;claim=_claim;argument_sentences=_argument_sentences/value",
     1659, "estimate", "train[:-600] of 2,259 (idebate size recalled from Wang & Ling 2016, not verified offline)"),
    ("opinion_abstracts_rotten_tomatoes", "opinion_abstracts_rotten_tomatoes", "opinion_abstracts/rotten_tomatoes:1.0.0",
     "train[:-600]", "movie_name=_movie_name;critic_consensus=_critic_consensus;critics=_critics/value",
     3131, "estimate", "train[:-600] of 3,731 (size recalled from Wang & Ling 2016, not verified offline)"),
    ("para_crawl_enes", "para_crawl_enes", "para_crawl/enes:1.2.0", "train[:30000]", "en;es",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("paws_wiki", "paws_wiki", "paws_wiki:1.1.0", "train[:30000]", "sentence1;sentence2;label",
     30000, "derived", "train[:30000] of 49,401 (" + REF_P3 + ", paws labeled_final)"),
    ("piqa", "piqa", "piqa:1.0.0", "train[:-100]", "goal;sol1;sol2;label",
     16013, "derived", "train[:-100] of 16,113 (" + REF_P3 + ")"),
    ("qnli", "qnli", "glue/qnli:2.0.0", "train[:30000]", "question;sentence;label",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("quac", "quac", "quac:1.0.0", "train[:30000]", "title;background;context;question;answer=orig_answer/text",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("record", "record", "super_glue/record:1.0.2", "train[:30000]", "passage;query;entities;answers",
     30000, "derived", "train[:30000] of 100,730 (" + REF_P3 + ")"),
    ("rte", "rte", "super_glue/rte:1.0.2", "train[:-200]", "premise;hypothesis;label",
     2290, "derived", "train[:-200] of 2,490 (" + REF_P3 + ")"),
    ("samsum", "samsum", "samsum:1.0.0", "train", "dialogue;summary",
     14732, "published", "full train split (" + REF_P3 + ")"),
    ("sentiment140", "sentiment140", "sentiment140:1.0.0", "train[:30000]", "text;polarity",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("snli", "snli", "snli:1.1.0", "train[:30000]", "premise;hypothesis;label",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]") + " FLAN drops label -1."),
    ("squad_v1", "squad_v1", "squad/v1.1:3.0.0", "train[:30000]", "title;context;question;answers=answers/text",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("squad_v2", "squad_v2", "squad/v2.0:3.0.0", "train[:30000]",
     "title;context;question;answers=answers/text;is_impossible",
     30000, "derived", "train[:30000] of 130,319 (" + REF_P3 + ")"),
    ("sst2", "sst2", "glue/sst2:2.0.0", "train[:30000]", "sentence;label",
     30000, "derived", "train[:30000] of 67,349 (" + REF_HFC.format("glue/sst2") + ")"),
    ("story_cloze", "story_cloze", "story_cloze/2016:1.0.0", "validation[:-200]", "context;endings;label",
     1671, "estimate", "validation[:-200] of 1,871 (2016 validation size recalled, not verified offline)"),
    ("stsb", "stsb", "glue/stsb:2.0.0", "train[:-100]", "sentence1;sentence2;label",
     5649, "derived", "train[:-100] of 5,749 (HF dataset card nyu-mll/glue, stsb)"),
    ("trec", "trec", "trec:1.0.0", "train[:-200]", "text;label=label-coarse",
     5252, "derived", "train[:-200] of 5,452 (" + REF_P3 + ")"),
    ("trivia_qa", "trivia_qa", "trivia_qa/rc:1.1.0", "train[:30000]",
     "question;answer=answer/normalized_value;answers=answer/normalized_aliases",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("trivia_qa_wiki_missing", "trivia_qa_wiki_missing", "trivia_qa/rc.nocontext:1.1.0", "train[:30000]",
     "question;answer=answer/normalized_value;answers=answer/normalized_aliases",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("true_case", "true_case", "para_crawl/enda:1.2.0", "train[:30000]", "en",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]") + " FLAN drops already-lowercase sentences."),
    ("unified_qa_science_inst", "unified_qa_science_inst", "unified_qa/ai2_science_middle:1.0.0", "train", "input;output",
     605, "estimate", "full train split; 605 recalled from the UnifiedQA ai2_science_middle release, not verified offline"),
    ("web_nlg_en", "web_nlg_en", "gem/web_nlg_en:1.1.0", "train[:30000]", "input;target;references",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("wic", "wic", "super_glue/wic:1.0.2", "train[:-200]", "word;sentence1;sentence2;label",
     5228, "derived", "train[:-200] of 5,428 (" + REF_P3 + ")"),
    ("wiki_lingua_english_en", "wiki_lingua_english_en", "gem/wiki_lingua_english_en:1.1.0", "train[:30000]", "source;target",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
    ("winogrande", "winogrande", "winogrande:1.2.0", "train_xl[:30000]", "sentence;option1;option2;label",
     30000, "derived", "train_xl[:30000] of 40,398 (" + REF_P3 + ")"),
    ("wmt14_enfr", "wmt14_enfr", "wmt14_translate/fr-en:1.0.0", "train[:30000]", "en;fr",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
] + [
    (f"wmt16_translate_{l}en", f"wmt16_translate_{l}en", f"wmt16_translate/{l}-en:1.0.0", "train[:30000]", f"en;{l}",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]"))
    for l in ("cs", "de", "fi", "ro", "ru", "tr")
] + [
    ("wnli", "wnli", "glue/wnli:2.0.0", "train[:-30]", "sentence1;sentence2;label",
     605, "estimate", "train[:-30] of 635 (GLUE WNLI train size recalled, not verified offline)"),
    ("word_segment", "word_segment", "para_crawl/enda:1.2.0", "train[60400:90400]", "en",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[60400:90400]")),
    ("wsc", "wsc", "super_glue/wsc.fixed:1.0.2", "train[:-50]", "text;span1_text;span2_text;span1_index;span2_index;label",
     504, "derived", "train[:-50] of 554 (" + REF_P3 + ")"),
    ("xsum", "xsum", "xsum:1.1.0", "train[:30000]", "document;summary",
     30000, "derived", "train[:30000] of 204,045 (" + REF_P3 + ")"),
    ("yelp_polarity_reviews", "yelp_polarity_reviews", "yelp_polarity_reviews:0.2.0", "train[:30000]", "text;label",
     30000, "estimate", UNVERIFIED_SLICE.format(split="train[:30000]")),
]

FLAN2021_NOTES = {
    "mnli_matched": "FLAN v2 registers mnli_matched and mnli_mismatched on the same train[:30000] (they differ only in the eval split); the released CSV lists the pair as two identical 'mnli' rows.",
    "mnli_mismatched": "See mnli_matched.",
    "multi_news": "FLAN v2 pins multi_news:1.0.0, which tensorflow-datasets 4.9 no longer builds; 2.1.0 has the same features.",
    "winogrande": "FLAN v2 pins winogrande:1.1.0, which tensorflow-datasets 4.9 no longer builds; 1.2.0 has the same features.",
    "xsum": "FLAN v2 reads huggingface:xsum through TFDS; the native TFDS xsum builder (manual download) has the same document/summary fields.",
    "trivia_qa_wiki_missing": "Listed in the released CSV but absent from the released FLAN v2 task configs; loader assumed to be trivia_qa without context (rc.nocontext).",
    "para_crawl_enes": "The released CSV lists this translation task as English-only; languages corrected to English;Spanish.",
    "newsroom": "TFDS newsroom needs a manual download.",
    "story_cloze": "TFDS story_cloze needs a manual download; FLAN trains on the 2016 validation split (no train split exists).",
}

# Template families: FLAN 2021 shares templates across closely related datasets.
FLAN2021_FAMILY = {
    "anli_r1": "anli", "anli_r2": "anli", "anli_r3": "anli",
    "mnli_matched": "mnli", "mnli_mismatched": "mnli",
    "arc_challenge": "arc", "arc_easy": "arc",
    "trivia_qa_wiki_missing": "trivia_qa",
    "para_crawl_enes": "translation", "wmt14_enfr": "translation",
    **{f"wmt16_translate_{l}en": "translation" for l in ("cs", "de", "fi", "ro", "ru", "tr")},
}

FLAN2021_ABILITY = {
    "logical reasoning": {
        "anli_r1", "anli_r2", "anli_r3", "cb", "rte", "mnli_matched", "mnli_mismatched", "qnli", "snli", "wnli",
        "copa", "cosmos_qa", "hellaswag", "piqa", "story_cloze", "winogrande", "wsc", "definite_pronoun_resolution",
    },
    "STEM": {"arc_challenge", "arc_easy", "openbookqa", "unified_qa_science_inst", "math_dataset", "drop"},
    "creative writing": {"common_gen", "dart", "e2e_nlg", "web_nlg_en"},
    "dialogue understanding": {"coqa", "quac", "samsum"},
    "multilingual": {"para_crawl_enes", "wmt14_enfr"} | {f"wmt16_translate_{l}en" for l in ("cs", "de", "fi", "ro", "ru", "tr")},
}

# ---------------------------------------------------------------------------------------------
# Dialog (its own submixture; counted inside Muffin by the paper).

DIALOG = {
    # name: (tfds name, split, field map, count, count source, count note)
    "qrecc": ("q_re_cc:1.0.0", "train", "context;question;question_rewrite;answer",
              63501, "estimate", "QReCC train turns as reported by the QReCC paper (63,501), recalled, not verified offline"),
    "wiki_dialog": ("wiki_dialog:1.0.0", "train", "title;passage;utterances;author_num",
                    11000000, "estimate",
                    "order of magnitude only (~11M dialogs reported for WikiDialog); any value above the 200,000 Dialog cap gives the same rate"),
}
UNRELEASED_REASON = (
    "not released: the Flan Collection generation code could not include {what} for legal reasons "
    "(google-research/FLAN flan/v2/README.md, NB #2)"
)
UNRELEASED = {
    "task_master": "Taskmaster",
    "dmcc_python": "DeepMind Code Contests",
    "dr_repair_error_comments": "DrRepair",
    "dr_repair_line_numbers": "DrRepair",
    "dr_repair_no_errors": "DrRepair",
    "dr_repair_plain_code": "DrRepair",
}

# ---------------------------------------------------------------------------------------------
# T0-SF: P3 prompts (HF dataset bigscience/P3, one subset per prompt). Train sizes from REF_P3.
# The CSV "Dataset" column truncates P3 dataset names at the second underscore (e.g. "social_i",
# "quarel_choose"); the real dataset is recovered from the prompt name by prefix.

P3_DATASETS = [
    # (prompt-name prefix, dataset, train size)
    ("adversarial_qa_", "adversarial_qa", 10000),
    ("amazon_polarity_", "amazon_polarity", 3600000),
    ("app_reviews_", "app_reviews", 288065),
    ("cos_e_v1.11_", "cos_e/v1.11", 9741),
    ("dbpedia_14_", "dbpedia_14", 560000),
    ("dream_", "dream", 6116),
    ("duorc_ParaphraseRC_", "duorc/ParaphraseRC", 69524),
    ("duorc_SelfRC_", "duorc/SelfRC", 60721),
    ("kilt_tasks_hotpotqa_", "kilt_tasks/hotpotqa", 88869),
    ("qasc_", "qasc", 8134),
    ("quail_", "quail", 10246),
    ("quarel_", "quarel", 1941),
    ("quartz_", "quartz", 2696),
    ("quoref_", "quoref", 19399),
    ("race_high_", "race/high", 62445),
    ("race_middle_", "race/middle", 25421),
    ("ropes_", "ropes", 10924),
    ("sciq_", "sciq", 11679),
    ("social_i_qa_", "social_i_qa", 33410),
    ("web_questions_", "web_questions", 3778),
    ("wiki_bio_", "wiki_bio", 582639),
    ("wiki_hop_original_", "wiki_hop/original", 43738),
    ("wiki_qa_", "wiki_qa", 20360),
    ("wiqa_", "wiqa", 29808),
]
# Prompts whose P3 subset has a different size than the rest of its dataset (filtered examples).
P3_COUNT_OVERRIDES = {
    "duorc_ParaphraseRC_build_story_around_qa": 58752,
    "duorc_ParaphraseRC_generate_question_by_answer": 58752,
    "duorc_SelfRC_build_story_around_qa": 60094,
    "duorc_SelfRC_generate_question_by_answer": 60094,
    "wiki_qa_Direct_Answer_to_Question": 1040,
    "wiki_qa_Generate_Question_from_Topic": 1040,
    "wiki_qa_Jeopardy_style": 1040,
    "wiki_qa_Topic_Prediction_Answer_Only": 1040,
    "wiki_qa_Topic_Prediction_Question_Only": 1040,
    "wiki_qa_Topic_Prediction_Question_and_Answer_Pair": 1040,
}
P3_ABILITY = {
    "cos_e/v1.11": "logical reasoning", "social_i_qa": "logical reasoning", "quarel": "logical reasoning",
    "wiki_hop/original": "logical reasoning",
    "qasc": "STEM", "sciq": "STEM", "quartz": "STEM", "wiqa": "STEM", "ropes": "STEM",
    "dream": "dialogue understanding",
}
P3_CATEGORY_ABILITY = {"Dialog Turn Prediction": "dialogue understanding", "Context Generation": "creative writing"}

# ---------------------------------------------------------------------------------------------
# CoT: the 9 datasets with rationales, each a TSV (question \t answer \t rationale).

COT_FILES = {
    # CSV dataset: (file, line count in the released TSV)
    "cot_gsm8k": ("gsm8k_train.tsv", 7473),
    "cot_strategyqa": ("strategyqa_train.tsv", 2061),
    "stream_aqua": ("aqua_train.tsv", 2728),
    "stream_creak": ("creak_train.tsv", 6915),
    "stream_ecqa": ("ecqa_train.tsv", 7112),
    "stream_esnli": ("esnli_train.tsv", 36174),
    "stream_qasc": ("qasc_train.tsv", 1084),
    "stream_qed": ("qed_train.tsv", 5154),
    "stream_sensemaking": ("sensemaking_train.tsv", 6070),
}
COT_INVERSIONS = ("Question Generation", "Explanation Generation", "Generate Question and Answer from Explanation")
COT_MATH = {"cot_gsm8k", "stream_aqua"}
# Names the released FLAN v2 code registers (cot_ = high-quality rationales, stream_ = lower quality).
COT_CODE_NAME = {
    "cot_gsm8k": "cot_gsm8k", "cot_strategyqa": "cot_strategyqa", "stream_aqua": "stream_aqua",
    "stream_creak": "cot_creak", "stream_ecqa": "cot_ecqa", "stream_esnli": "cot_esnli", "stream_qasc": "cot_qasc",
    "stream_qed": "stream_qed", "stream_sensemaking": "cot_sensemaking",
}

# ---------------------------------------------------------------------------------------------
# NIv2.

NIV2_MMLU_OVERLAP = set(range(664, 668)) | set(range(685, 738))
# The released CSV has 1,556 NIv2 task files, the paper counts 1,554 (see README): these two are
# listed but not counted and not enabled by default. --niv2_keep_surplus enables them.
NIV2_SURPLUS = ("task1730_personachat_choose_next", "task1731_quartz_question_answering")
NIV2_SURPLUS_REASON = (
    "surplus over the paper's NIv2 count: the released CSV lists 1,556 NIv2 tasks, the paper 1,554, and no public "
    "source names the two; by fixed rule the two highest-numbered task files are not counted (see configs/catalog/README.md)"
)
NIV2_COUNT_ESTIMATE = 6500
NIV2_COUNT_NOTE = "upper bound: the per-task instance ceiling of the released NIv2 files (README: Example counts)"
NIV2_CATEGORY_ABILITY = {
    "Toxic Language Detection": "ethics", "Ethics Classification": "ethics", "Stereotype Detection": "ethics",
    "Text to Code": "code generation", "Code to Text": "code generation",
    "Mathematics": "STEM", "Number Conversion": "STEM", "Count For Loops": "STEM",
    "Program Execution": "logical reasoning", "Textual Entailment": "logical reasoning",
    "Commonsense Classification": "logical reasoning", "Cause Effect Classification": "logical reasoning",
    "Coreference Resolution": "logical reasoning", "Word Analogy": "logical reasoning",
    "Question Decomposition": "logical reasoning", "Sentence Ordering": "logical reasoning",
    "Coherence Classification": "logical reasoning", "Date Validity Prediction": "logical reasoning",
    "Leap Year Prediction": "logical reasoning", "Temporal Reasoning": "logical reasoning",
    "Fact Verification": "logical reasoning", "Answer Verification": "logical reasoning",
    "Dialogue Generation": "dialogue understanding", "Dialogue Act Recognition": "dialogue understanding",
    "Dialogue State Tracking": "dialogue understanding", "Speaker Identification": "dialogue understanding",
    "Speaker Relation Classification": "dialogue understanding", "Intent Identification": "dialogue understanding",
    "Negotiation Strategy Detection": "dialogue understanding",
    "Story Composition": "creative writing", "Poem Generation": "creative writing", "Rhyme Generation": "creative writing",
    "Sentence Composition": "creative writing", "Title Generation": "creative writing", "Data to Text": "creative writing",
    "Style Transfer": "creative writing", "Sentence Expansion": "creative writing",
}
# Datasets whose QA/classification tasks are maths or science content (matched on "_"-separated tokens).
NIV2_STEM_TOKENS = {
    "arithmetic", "aqua", "arc", "asdiv", "svamp", "mawps", "gsm8k", "math", "mathqa", "mathmatics", "numersense",
    "sciq", "qasc", "eqasc", "openbookqa", "pubmed", "chemprot", "biocreative", "medical", "physics", "science",
}
NIV2_STEM_DATASETS = {"semeval_2019_task_10"}  # geometry/algebra word problems
NIV2_ROLEPLAY_DATASET = re.compile(r"persona")

# ---------------------------------------------------------------------------------------------


class BuildError(RuntimeError):
    pass


def _parse_languages(value: str, where: str) -> tuple[str, ...]:
    value = value.strip()
    if value.startswith("["):
        try:
            langs = ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            raise BuildError(f"{where}: cannot parse Languages {value!r}: {e}") from None
        if not isinstance(langs, list) or not all(isinstance(x, str) and x for x in langs):
            raise BuildError(f"{where}: Languages {value!r} is not a list of names")
        return tuple(langs)
    if not value:
        raise BuildError(f"{where}: Languages is empty")
    return (value,)


def read_released_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise BuildError(
            f"Released task list {path} not found. It is flan_collection_info.csv from google-research/FLAN "
            f"(flan/v2/); pass --input."
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != CSV_HEADER:
            raise BuildError(f"{path}:1: header {reader.fieldnames} != {CSV_HEADER}")
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if any(row[k] is None or not row[k].strip() for k in CSV_HEADER):
                raise BuildError(f"{where}: empty field in {row}")
            row = {k: row[k].strip() for k in CSV_HEADER}
            row["_where"] = where
            row["_languages"] = _parse_languages(row["Languages"], where)
            rows.append(row)
    return rows


def _fmap(spec: str) -> tuple[tuple[str, str], ...]:
    items = []
    for item in spec.split(";"):
        out, _, src = item.partition("=")
        items.append((out, src or out))
    return tuple(items)


def _inversions_by_parent(rows: list[dict], parent_of) -> dict:
    inv = defaultdict(list)
    for r in rows:
        parent = parent_of(r)
        if parent is not None and r["Specific Task Category"] not in inv[parent]:
            inv[parent].append(r["Specific Task Category"])
    return inv


def build_flan2021(rows: list[dict]) -> list[cat.TaskRecord]:
    flan_rows = [r for r in rows if r["Source"] in ("FLAN", "FLAN/T0")]
    base = [r for r in flan_rows if not r["Specific Task Category"].startswith("Inverted ")]
    inverted = [r for r in flan_rows if r["Specific Task Category"].startswith("Inverted ")]
    by_csv_dataset = defaultdict(list)
    for r in base:
        by_csv_dataset[r["Dataset"]].append(r)
    inv = defaultdict(list)
    for r in inverted:
        key = (r["Dataset"], r["Specific Task Category"][len("Inverted "):])
        if r["Specific Task Category"] not in inv[key]:
            inv[key].append(r["Specific Task Category"])

    spec_by_dataset = defaultdict(list)
    for spec in FLAN2021:
        spec_by_dataset[spec[1]].append(spec)
    if set(spec_by_dataset) != set(by_csv_dataset):
        raise BuildError(
            "FLAN2021 table and the released CSV disagree on datasets: only in table "
            f"{sorted(set(spec_by_dataset) - set(by_csv_dataset))}, only in CSV {sorted(set(by_csv_dataset) - set(spec_by_dataset))}"
        )
    records = []
    for name, csv_ds, tfds_name, split, fields, count, csource, cnote in FLAN2021:
        csv_rows = by_csv_dataset[csv_ds]
        if len(csv_rows) != len(spec_by_dataset[csv_ds]):
            raise BuildError(f"dataset {csv_ds!r}: {len(csv_rows)} CSV rows vs {len(spec_by_dataset[csv_ds])} table rows")
        r = csv_rows[0]
        category = r["Specific Task Category"]
        languages = r["_languages"]
        if name == "para_crawl_enes":
            languages = ("English", "Spanish")
        ability = next((a for a, names in FLAN2021_ABILITY.items() if name in names), "humanities")
        records.append(
            cat.TaskRecord(
                name=name, submixture="flan2021", paper_group="muffin", source=r["Source"], dataset=name,
                csv_dataset=csv_ds, category=category, inversions=tuple(inv[(csv_ds, category)]),
                languages=languages, template_family=FLAN2021_FAMILY.get(name, name), ability=ability,
                loader=cat.LoaderSpec("tfds", tfds_name, "", split, _fmap(fields)),
                example_count=count, count_source=csource, count_note=cnote, enabled=True, disabled_reason="",
                in_paper_count=True, notes=FLAN2021_NOTES.get(name, ""),
            )
        )
    return records


def build_dialog_and_program_synthesis(rows: list[dict]) -> list[cat.TaskRecord]:
    records = []
    for source, submix, family, ability in (
        ("Dialog", "dialog", "dialog", "dialogue understanding"),
        ("Program Synthesis", "flan2021", "program_synthesis", "code generation"),
    ):
        src_rows = [r for r in rows if r["Source"] == source]
        datasets = list(OrderedDict.fromkeys(r["Dataset"] for r in src_rows))
        for ds in datasets:
            ds_rows = [r for r in src_rows if r["Dataset"] == ds]
            # The first category of each dataset is the task; the rest are its inversions
            # ("Dialog Context Generation", "Coding Instruction Generation", "Code Error Generation").
            main, others = ds_rows[0], ds_rows[1:]
            if ds in DIALOG:
                tfds_name, split, fields, count, csource, cnote = DIALOG[ds]
                loader = cat.LoaderSpec("tfds", tfds_name, "", split, _fmap(fields))
                enabled, reason = True, ""
            elif ds in UNRELEASED:
                loader = cat.LoaderSpec("unavailable", "")
                count, csource, cnote = 0, "unavailable", ""
                enabled, reason = False, UNRELEASED_REASON.format(what=UNRELEASED[ds])
            else:
                raise BuildError(f"{main['_where']}: {source} dataset {ds!r} has no loader entry")
            records.append(
                cat.TaskRecord(
                    name=ds, submixture=submix, paper_group="muffin", source=source, dataset=ds, csv_dataset=ds,
                    category=main["Specific Task Category"],
                    inversions=tuple(r["Specific Task Category"] for r in others), languages=main["_languages"],
                    template_family=family, ability=ability, loader=loader, example_count=count,
                    count_source=csource, count_note=cnote, enabled=enabled, disabled_reason=reason,
                    in_paper_count=True, notes="",
                )
            )
    return records


def build_t0(rows: list[dict]) -> list[cat.TaskRecord]:
    records = []
    for r in (r for r in rows if r["Source"] == "T0"):
        prompt = r["Specific Task Category"]
        match = [(p, ds, n) for p, ds, n in P3_DATASETS if prompt.startswith(p)]
        if len(match) != 1:
            raise BuildError(f"{r['_where']}: cannot map P3 prompt {prompt!r} to one dataset (matches: {match})")
        _, ds, size = match[0]
        count = P3_COUNT_OVERRIDES.get(prompt, size)
        category = r["Generic Task Category"]
        ability = P3_CATEGORY_ABILITY.get(category) or P3_ABILITY.get(ds, "humanities")
        notes = "" if r["Dataset"] == ds else f"The released CSV's Dataset column reads {r['Dataset']!r}; the P3 dataset is {ds!r}."
        records.append(
            cat.TaskRecord(
                name=prompt, submixture="t0_sf", paper_group="t0_sf", source="T0", dataset=ds, csv_dataset=r["Dataset"],
                category=category, inversions=(), languages=r["_languages"], template_family="p3", ability=ability,
                # answer_choices: only subsets whose prompt has answer choices carry the column; the HF source
                # reads it as [] elsewhere (sources.HfDataSource.optional_lists), and *_opt types show the choices.
                loader=cat.LoaderSpec("hf", "bigscience/P3", prompt, "train",
                                      (("inputs", "inputs_pretokenized"), ("targets", "targets_pretokenized"),
                                       ("options", "answer_choices"))),
                example_count=count, count_source="published", count_note="P3 subset train split (" + REF_P3 + ")",
                enabled=True, disabled_reason="", in_paper_count=True, notes=notes,
            )
        )
    return records


def build_cot(rows: list[dict]) -> list[cat.TaskRecord]:
    cot_rows = [r for r in rows if r["Source"] == "CoT"]
    datasets = list(OrderedDict.fromkeys(r["Dataset"] for r in cot_rows))
    if set(datasets) != set(COT_FILES):
        raise BuildError(f"CoT datasets in CSV {sorted(datasets)} != table {sorted(COT_FILES)}")
    records = []
    for ds in datasets:
        ds_rows = [r for r in cot_rows if r["Dataset"] == ds]
        main = [r for r in ds_rows if r["Specific Task Category"] not in COT_INVERSIONS]
        inv = [r["Specific Task Category"] for r in ds_rows if r["Specific Task Category"] in COT_INVERSIONS]
        if len(main) != 1 or tuple(inv) != COT_INVERSIONS:
            raise BuildError(f"CoT dataset {ds!r}: expected 1 task and 3 inversions, got {[r['Specific Task Category'] for r in ds_rows]}")
        fname, n = COT_FILES[ds]
        records.append(
            cat.TaskRecord(
                name=ds, submixture="cot", paper_group="cot", source="CoT", dataset=ds.split("_", 1)[1], csv_dataset=ds,
                category=main[0]["Specific Task Category"], inversions=tuple(inv), languages=main[0]["_languages"],
                template_family="cot", ability="CoT math" if ds in COT_MATH else "logical reasoning",
                loader=cat.LoaderSpec("cot_tsv", fname), example_count=n, count_source="published",
                count_note=REF_COT, enabled=True, disabled_reason="", in_paper_count=True,
                notes=_cot_notes(ds),
            )
        )
    return records


def _cot_notes(ds: str) -> str:
    notes = []
    if COT_CODE_NAME[ds] != ds:
        notes.append(
            f"The released FLAN v2 code registers this dataset as {COT_CODE_NAME[ds]} (cot_ = high-quality "
            "rationales, stream_ = lower quality); the task name follows the released CSV."
        )
    if ds in ("stream_esnli", "stream_qed"):
        notes.append("Its TSV is not in ../shared/data/flan/cot; it ships with google-research/FLAN flan/v2/cot_data/.")
    return " ".join(notes)


def _niv2_ability(ds: str, category: str, languages: tuple[str, ...]) -> str:
    if any(lang != "English" for lang in languages):
        return "multilingual"
    if NIV2_ROLEPLAY_DATASET.search(ds):
        return "role-play"
    if category in NIV2_CATEGORY_ABILITY:
        return NIV2_CATEGORY_ABILITY[category]
    if ds in NIV2_STEM_DATASETS or NIV2_STEM_TOKENS & set(re.split(r"[_\-]", ds)):
        return "STEM"
    return "humanities"


def count_niv2_instances(niv2_dir: Path, task_file: str) -> int:
    tasks = niv2_dir / "tasks" if (niv2_dir / "tasks").is_dir() else niv2_dir
    path = tasks / task_file
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    inst = data.get("Instances")
    if not isinstance(inst, list):
        raise BuildError(f"{path}: 'Instances' is not a list")
    return len(inst)


def build_niv2(rows: list[dict], niv2_dir: Path | None, keep_surplus: bool) -> list[cat.TaskRecord]:
    records = []
    seen = set()
    for r in (r for r in rows if r["Source"] == "NIv2"):
        task = r["Specific Task Category"]
        m = re.match(r"^task(\d+)_", task)
        if not m:
            raise BuildError(f"{r['_where']}: NIv2 task {task!r} is not a task file name")
        if task in seen:
            raise BuildError(f"{r['_where']}: NIv2 task {task!r} listed twice")
        seen.add(task)
        if int(m.group(1)) in NIV2_MMLU_OVERLAP:
            # The paper removes these; the released CSV already has none, so this never fires today.
            continue
        surplus = task in NIV2_SURPLUS
        if niv2_dir is not None:
            count, csource, cnote = count_niv2_instances(niv2_dir, task + ".json"), "published", "len(Instances) in the natural-instructions task file"
        else:
            count, csource, cnote = NIV2_COUNT_ESTIMATE, "estimate", NIV2_COUNT_NOTE
        enabled = keep_surplus or not surplus
        records.append(
            cat.TaskRecord(
                name=task, submixture="niv2", paper_group="niv2", source="NIv2", dataset=r["Dataset"],
                csv_dataset=r["Dataset"], category=r["Generic Task Category"], inversions=(),
                languages=r["_languages"], template_family="niv2",
                ability=_niv2_ability(r["Dataset"], r["Generic Task Category"], r["_languages"]),
                loader=cat.LoaderSpec("niv2", task + ".json"), example_count=count, count_source=csource,
                count_note=cnote, enabled=enabled, disabled_reason="" if enabled else NIV2_SURPLUS_REASON,
                in_paper_count=not surplus,
                notes=(NIV2_SURPLUS_REASON if (surplus and enabled) else ""),
            )
        )
    missing = [t for t in NIV2_SURPLUS if t not in seen]
    if missing:
        raise BuildError(f"NIV2_SURPLUS names tasks not in the CSV: {missing}")
    return records


def build(input_path: Path, niv2_dir: Path | None = None, keep_surplus: bool = False) -> list[cat.TaskRecord]:
    rows = read_released_csv(input_path)
    known = {"FLAN", "FLAN/T0", "T0", "NIv2", "CoT", "Dialog", "Program Synthesis"}
    unknown = sorted({r["Source"] for r in rows} - known)
    if unknown:
        raise BuildError(f"{input_path}: unknown Source values {unknown}")
    records = (
        build_flan2021(rows)
        + build_dialog_and_program_synthesis(rows)
        + build_t0(rows)
        + build_niv2(rows, niv2_dir, keep_surplus)
        + build_cot(rows)
    )
    names = [r.name for r in records]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise BuildError(f"duplicate task names: {dups}")
    return records


def render(records: list[cat.TaskRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(cat.COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(cat.format_row(rec))
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="flan_collection_info.csv")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--niv2_dir", type=Path, default=None, help="natural-instructions clone: exact NIv2 counts")
    p.add_argument("--niv2_keep_surplus", action="store_true", help="enable the 2 NIv2 tasks beyond the paper count")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if --output differs from a rebuild")
    args = p.parse_args(argv)
    try:
        records = build(args.input, args.niv2_dir, args.niv2_keep_surplus)
    except BuildError as e:
        print(f"build_catalog: error: {e}", file=sys.stderr)
        return 2
    text = render(records)
    catalog = cat.parse_catalog(text, path=args.output)  # validates every row
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            print(f"build_catalog: {args.output} is stale; rerun configs/catalog/build_catalog.py", file=sys.stderr)
            return 1
        print(f"build_catalog: {args.output} is up to date ({len(records)} tasks)")
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"build_catalog: wrote {args.output} ({len(records)} tasks)")
    print(catalog.format_counts_table())
    try:
        catalog.check_paper_counts()
    except cat.CatalogError as e:
        print(f"build_catalog: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
