"""Template families of the Flan 2022 collection, as data (our own wording throughout).

The catalog's ``template_family`` column names one family per Flan 2021 dataset group (``anli``, ``mnli``,
``arc``, ``translation``, or the task name) plus ``p3``, ``niv2``, ``cot``, ``dialog`` and ``program_synthesis``.
Datasets of the same shape share one registered family here; :data:`CATALOG_FAMILY_MAP` says which. The
per-dataset field adapters (raw loader fields -> family schema) live in ``flan_mix.data.flan.flan_adapters``.

Shared families registered by this module (10 plain templates each; all but ``p3`` also have 3 inverted
templates, which give the answer or output and ask for the input: the Flan 2021 input inversions):

========================  ==============================================  ========================================
family                    schema                                          catalog families
========================  ==============================================  ========================================
``flan_nli``              premise, hypothesis, options, answer            anli, cb, mnli, rte, snli, wnli
``flan_paraphrase``       sentence1, sentence2, options, answer           glue_mrpc, glue_qqp, paws_wiki
``flan_sentiment``        text, options, answer                           imdb_reviews, sentiment140, sst2,
                                                                          yelp_polarity_reviews
``flan_topic``            text, options, answer                           ag_news_subset, trec
``flan_classify``         text, question, options, answer                 cola, qnli, stsb, wic, wsc, multirc
``flan_summarize``        text, summary                                   aeslc, cnn_dailymail, gigaword,
                                                                          multi_news, newsroom, samsum, xsum,
                                                                          wiki_lingua_english_en,
                                                                          opinion_abstracts_*
``flan_translate``        source, target, src_lang, tgt_lang              translation
``flan_reading_qa``       context, question, answer, options              bool_q, coqa, cosmos_qa, drop, quac,
                                                                          record, squad_v1, squad_v2
``flan_data_to_text``     data, text                                      common_gen, dart, e2e_nlg, web_nlg_en
``flan_rewrite``          instruction, text, target                       fix_punct, true_case, word_segment,
                                                                          lambada
``p3``                    prompt, answer, options                         p3 (T0-SF: P3 prompts come rendered;
                                                                          options = the subset's answer_choices)
``generic_qa`` (builtin)  question, answer, options, rationale            natural_questions, trivia_qa,
                                                                          math_dataset, unified_qa_science_inst
``generic_mc`` (builtin)  question, answer, options, rationale            arc, copa, hellaswag, openbookqa, piqa,
                                                                          story_cloze, winogrande,
                                                                          definite_pronoun_resolution
``cot``/``niv2``/         (builtin: template_families)                   cot, niv2, dialog
``dialog`` (builtin)
========================  ==============================================  ========================================

``program_synthesis`` has no family: its 5 tasks were never released and are disabled in the catalog.
"""

from __future__ import annotations

from flan_mix.data import templates

__all__ = ["FAMILY_SPECS", "CATALOG_FAMILY_MAP", "family_for", "register_flan_families"]

FAMILY_SPECS = (
    {
        "name": "flan_nli",
        "description": "Does the premise support the hypothesis? Options: yes / it is not possible to tell / no.",
        "fields": ["premise", "hypothesis", "options", "answer"],
        "options_field": "options",
        "options_required": True,
        "templates": [
            ["{premise}\n\nGiven the passage above, is it true that \"{hypothesis}\"?\n\n{options}", "{answer}"],
            ["Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise back up the hypothesis?\n{options}",
             "{answer}"],
            ["Read this: {premise}\n\nCan we infer the statement below from it?\n{hypothesis}\n\n{options}",
             "{answer}"],
            ["Suppose {premise} Would that make the following hold? {hypothesis}\n{options}", "{answer}"],
            ["Statement A: {premise}\nStatement B: {hypothesis}\nIf A is true, must B be true as well?\n{options}",
             "{answer}"],
            ["{premise}\nBased only on that, decide whether this follows: \"{hypothesis}\"\n{options}", "{answer}"],
            ["Here is a short text.\n{premise}\n\nQuestion: does it entail \"{hypothesis}\"?\n{options}",
             "{answer}"],
            ["Check the claim against the evidence.\nEvidence: {premise}\nClaim: {hypothesis}\n{options}",
             "{answer}"],
            ["{premise}\n\nIs the sentence \"{hypothesis}\" a consequence of what you just read?\n{options}",
             "{answer}"],
            ["Taking \"{premise}\" as given, is \"{hypothesis}\" also correct?\n\n{options}", "{answer}"],
        ],
        "inverted": [
            ["{premise}\n\nWrite a statement such that the answer to \"Does the passage above support it?\" is "
             "\"{answer}\".", "{hypothesis}"],
            ["Premise: {premise}\nHow the hypothesis relates to it: {answer}\nWrite such a hypothesis.",
             "{hypothesis}"],
            ["Here is a text: {premise}\nGive a sentence for which \"does the text entail it?\" gets the reply "
             "\"{answer}\".", "{hypothesis}"],
        ],
    },
    {
        "name": "flan_paraphrase",
        "description": "Do two sentences (or questions) say the same thing?",
        "fields": ["sentence1", "sentence2", "options", "answer"],
        "options_field": "options",
        "options_required": True,
        "templates": [
            ["First: {sentence1}\nSecond: {sentence2}\nDo these two mean the same thing?\n{options}", "{answer}"],
            ["{sentence1}\n{sentence2}\n\nAre the two sentences above paraphrases of each other?\n{options}",
             "{answer}"],
            ["Compare these texts.\nA) {sentence1}\nB) {sentence2}\nIs B a rewording of A?\n{options}", "{answer}"],
            ["Would a careful reader say \"{sentence1}\" and \"{sentence2}\" express one idea?\n{options}",
             "{answer}"],
            ["Text 1: {sentence1}\nText 2: {sentence2}\n\nSame meaning?\n{options}", "{answer}"],
            ["Decide whether the second sentence restates the first.\n\n{sentence1}\n{sentence2}\n\n{options}",
             "{answer}"],
            ["{sentence1}\n\nDoes the following convey the same content? {sentence2}\n{options}", "{answer}"],
            ["Here are two lines of text:\n- {sentence1}\n- {sentence2}\nAre they equivalent?\n{options}",
             "{answer}"],
            ["Is it fair to say \"{sentence2}\" is just another way of saying \"{sentence1}\"?\n{options}",
             "{answer}"],
            ["Sentence one: {sentence1}\nSentence two: {sentence2}\nDo they match in meaning?\n\n{options}",
             "{answer}"],
        ],
        "inverted": [
            ["{sentence1}\n\nWrite a second sentence so that the answer to \"Do the two mean the same thing?\" is "
             "\"{answer}\".", "{sentence2}"],
            ["First sentence: {sentence1}\nSame meaning as the second one? {answer}\nWrite the second sentence.",
             "{sentence2}"],
            ["Write a sentence to pair with \"{sentence1}\"; asked whether the two are paraphrases, a reader would "
             "say {answer}.", "{sentence2}"],
        ],
    },
    {
        "name": "flan_sentiment",
        "description": "The sentiment of a review or post.",
        "fields": ["text", "options", "answer"],
        "options_field": "options",
        "options_required": True,
        "templates": [
            ["{text}\n\nHow does the writer feel?\n{options}", "{answer}"],
            ["Review: {text}\nWhat is the sentiment of this review?\n{options}", "{answer}"],
            ["Classify the tone of the following text.\n\n{text}\n\n{options}", "{answer}"],
            ["\"{text}\"\nIs this positive or negative in tone?\n{options}", "{answer}"],
            ["Read the post and label its sentiment.\n{text}\n{options}", "{answer}"],
            ["{text}\n\nWould you call this opinion favorable or unfavorable?\n{options}", "{answer}"],
            ["What attitude does this express?\n\n{text}\n\n{options}", "{answer}"],
            ["Someone wrote: {text}\nWhich sentiment fits best?\n{options}", "{answer}"],
            ["Text: {text}\nSentiment:\n{options}", "{answer}"],
            ["Judge the mood of this message: {text}\n{options}", "{answer}"],
        ],
        "inverted": [
            ["Write a short review or post with {answer} sentiment.", "{text}"],
            ["Sentiment: {answer}\nWrite a text that expresses it.", "{text}"],
            ["Compose a message whose tone a reader would label \"{answer}\".", "{text}"],
        ],
    },
    {
        "name": "flan_topic",
        "description": "What a short text is about.",
        "fields": ["text", "options", "answer"],
        "options_field": "options",
        "options_required": True,
        "templates": [
            ["{text}\n\nWhat is this text about?\n{options}", "{answer}"],
            ["Pick the category for this text.\n\n{text}\n\n{options}", "{answer}"],
            ["Text: {text}\nTopic:\n{options}", "{answer}"],
            ["Which subject does the following belong to?\n{text}\n{options}", "{answer}"],
            ["\"{text}\"\nHow would you file this?\n{options}", "{answer}"],
            ["Label the text below with its topic.\n{text}\n{options}", "{answer}"],
            ["{text}\nWhat kind of item is this?\n\n{options}", "{answer}"],
            ["Sort this into a category: {text}\n{options}", "{answer}"],
            ["Here is a snippet.\n{text}\nWhat is its main theme?\n{options}", "{answer}"],
            ["Classify by subject matter:\n\n{text}\n\n{options}", "{answer}"],
        ],
        "inverted": [
            ["Write a short text about the topic: {answer}", "{text}"],
            ["Category: {answer}\nWrite something that belongs in this category.", "{text}"],
            ["Give an example of a text that would be filed under \"{answer}\".", "{text}"],
        ],
    },
    {
        "name": "flan_classify",
        "description": "A judgment about a text, asked as a question (grammaticality, word sense, coreference...).",
        "fields": ["text", "question", "options", "answer"],
        "options_field": "options",
        "options_required": True,
        "templates": [
            ["{text}\n\n{question}\n{options}", "{answer}"],
            ["Read the following.\n{text}\n\nQuestion: {question}\n{options}", "{answer}"],
            ["{question}\n\n{text}\n\n{options}", "{answer}"],
            ["Input: {text}\nTask: {question}\n{options}", "{answer}"],
            ["Consider this text:\n{text}\n{question}\n{options}", "{answer}"],
            ["{text}\nAnswer this about the text above: {question}\n{options}", "{answer}"],
            ["Here is an item to judge.\n\n{text}\n\n{question}\n\n{options}", "{answer}"],
            ["Text: {text}\n\n{question} Choose carefully.\n{options}", "{answer}"],
            ["{question}\nThe text: {text}\n{options}", "{answer}"],
            ["Look at this: \"{text}\"\n{question}\n{options}", "{answer}"],
        ],
        "inverted": [
            ["Write a text for which the answer to \"{question}\" is \"{answer}\".", "{text}"],
            ["Question: {question}\nAnswer: {answer}\nWhat text was the question asked about?", "{text}"],
            ["Produce an input that gets the reply \"{answer}\" to this question: {question}", "{text}"],
        ],
    },
    {
        "name": "flan_summarize",
        "description": "Write a short summary (or title/subject line) of a longer text.",
        "fields": ["text", "summary"],
        "answer_field": "summary",
        "templates": [
            ["{text}\n\nSummarize the text above.", "{summary}"],
            ["Write a brief summary of this:\n\n{text}", "{summary}"],
            ["Text: {text}\nShort summary:", "{summary}"],
            ["{text}\n\nWhat is the gist of this in a few words?", "{summary}"],
            ["Condense the following into its key points.\n{text}", "{summary}"],
            ["Here is a document.\n\n{text}\n\nGive a short overview of it.", "{summary}"],
            ["Sum this up: {text}", "{summary}"],
            ["{text}\nTL;DR:", "{summary}"],
            ["Read the passage and write a compact summary.\n\n{text}", "{summary}"],
            ["What are the main points of the text below?\n{text}", "{summary}"],
        ],
        "inverted": [
            ["Write a longer text that this summary describes:\n\n{summary}", "{text}"],
            ["Summary: {summary}\n\nExpand it into a full document.", "{text}"],
            ["Here is the gist of a text: {summary}\nWrite the text.", "{text}"],
        ],
    },
    {
        "name": "flan_translate",
        "description": "Translation between two languages (both directions are drawn by the task adapter).",
        "fields": ["source", "target", "src_lang", "tgt_lang"],
        "answer_field": "target",
        "templates": [
            ["Translate into {tgt_lang}:\n\n{source}", "{target}"],
            ["{source}\n\nRender this in {tgt_lang}.", "{target}"],
            ["{src_lang}: {source}\n{tgt_lang}:", "{target}"],
            ["How would you say this in {tgt_lang}? {source}", "{target}"],
            ["Here is some {src_lang} text.\n{source}\nPlease give it in {tgt_lang}.", "{target}"],
            ["Turn the following {src_lang} sentence into {tgt_lang}.\n\n{source}", "{target}"],
            ["{source}\nThe same in {tgt_lang}:", "{target}"],
            ["I need a {tgt_lang} version of this: {source}", "{target}"],
            ["Convert from {src_lang} to {tgt_lang}:\n{source}", "{target}"],
            ["Write \"{source}\" in {tgt_lang}.", "{target}"],
        ],
        "inverted": [
            ["Here is a {tgt_lang} translation: {target}\nWhat was the {src_lang} original?", "{source}"],
            ["{target}\n\nThis renders a {src_lang} sentence in {tgt_lang}. Write that {src_lang} sentence.",
             "{source}"],
            ["Give the {src_lang} text that was translated into this {tgt_lang}: {target}", "{source}"],
        ],
    },
    {
        "name": "flan_reading_qa",
        "description": "Answer a question about a passage (extractive, abstractive, yes/no or multiple choice).",
        "fields": ["context", "question", "answer", "options"],
        "options_field": "options",
        "templates": [
            ["{context}\n\nAnswer this about the passage: {question}\n{options}", "{answer}"],
            ["Passage: {context}\nQuestion: {question}\n{options}\nAnswer:", "{answer}"],
            ["Read the text and answer the question.\n\n{context}\n\n{question}\n{options}", "{answer}"],
            ["{question}\n\nUse this text to answer:\n{context}\n{options}", "{answer}"],
            ["Here is an article.\n{context}\n\nBased on it, {question}\n{options}", "{answer}"],
            ["Context: {context}\n\nQ: {question}\n{options}", "{answer}"],
            ["{context}\n{question}\n{options}", "{answer}"],
            ["Look at the passage below, then reply to the question.\n{context}\nQuestion: {question}\n{options}",
             "{answer}"],
            ["From the information here:\n\n{context}\n\nwhat is the answer to \"{question}\"?\n{options}",
             "{answer}"],
            ["Background: {context}\nNow answer: {question}\n\n{options}", "{answer}"],
        ],
        "inverted": [
            ["{context}\n\nWrite a question about the passage whose answer is \"{answer}\".", "{question}"],
            ["Passage: {context}\nAnswer: {answer}\nWhat question about the passage has this answer?", "{question}"],
            ["Read the text, then ask something it answers with \"{answer}\".\n\n{context}", "{question}"],
        ],
    },
    {
        "name": "flan_data_to_text",
        "description": "Write a sentence that expresses structured data or a set of concepts.",
        "fields": ["data", "text"],
        "answer_field": "text",
        "templates": [
            ["{data}\n\nWrite a sentence that uses all of this information.", "{text}"],
            ["Data: {data}\nSentence:", "{text}"],
            ["Turn these facts into natural text.\n\n{data}", "{text}"],
            ["Describe the following in one or two sentences: {data}", "{text}"],
            ["Here is some structured data.\n{data}\nExpress it as fluent English.", "{text}"],
            ["{data}\nWhat sentence conveys all of the above?", "{text}"],
            ["Compose a short description based on: {data}", "{text}"],
            ["Write text from this record.\n\n{data}", "{text}"],
            ["Information: {data}\n\nPut it into words.", "{text}"],
            ["Make a sentence out of these items: {data}", "{text}"],
        ],
        "inverted": [
            ["Sentence: {text}\n\nList the facts or concepts it expresses.", "{data}"],
            ["{text}\n\nTurn this sentence back into structured data.", "{data}"],
            ["What data could this description have been written from?\n{text}", "{data}"],
        ],
    },
    {
        "name": "flan_rewrite",
        "description": "Fix or complete a text following an instruction (punctuation, casing, spacing, next word).",
        "fields": ["instruction", "text", "target"],
        "answer_field": "target",
        "templates": [
            ["{instruction}\n\n{text}", "{target}"],
            ["{text}\n\n{instruction}", "{target}"],
            ["Task: {instruction}\nInput: {text}\nOutput:", "{target}"],
            ["{instruction}: {text}", "{target}"],
            ["Here is some text.\n{text}\n{instruction}", "{target}"],
            ["Please do this. {instruction}\n\n{text}", "{target}"],
            ["Text: {text}\n\nInstruction: {instruction}", "{target}"],
            ["{instruction} The text is below.\n{text}", "{target}"],
            ["Your job: {instruction}\n\n{text}", "{target}"],
            ["Input:\n{text}\n\n{instruction} Result:", "{target}"],
        ],
        "inverted": [
            ["Result: {target}\nIt came from the task \"{instruction}\" What was the input text?", "{text}"],
            ["Someone was asked: {instruction} They produced:\n{target}\nWrite the text they started from.", "{text}"],
            ["{target}\n\nThis is the output of \"{instruction}\" Give the text it was made from.", "{text}"],
        ],
    },
    {
        "name": "p3",
        "description": "T0-SF: P3 examples arrive already prompted; these wrap the prompt lightly. Subsets with "
                       "answer choices list them as options in *_opt types; the others render the plain prompt.",
        "fields": ["prompt", "answer", "options"],
        # Not required: many P3 subsets (generation prompts) have no answer choices, and *_opt must still work.
        "options_field": "options",
        "templates": [
            ["{prompt}\n{options}", "{answer}"],
            ["{prompt}\n\n{options}\n\nAnswer:", "{answer}"],
            ["Respond to the following.\n\n{prompt}\n\n{options}", "{answer}"],
            ["{prompt}\n{options}\nYour response:", "{answer}"],
            ["Input: {prompt}\n{options}\nOutput:", "{answer}"],
            ["Please complete this task.\n{prompt}\n{options}", "{answer}"],
            ["{prompt}\n\n{options}\n\nReply with the answer.", "{answer}"],
            ["Here is a request.\n\n{prompt}\n\n{options}", "{answer}"],
            ["Task:\n{prompt}\n\n{options}\n\nResult:", "{answer}"],
            ["{prompt}\n{options}\nWhat do you say?", "{answer}"],
        ],
    },
)

# Catalog template_family -> registered family. Every template_family of an enabled catalog task must be here
# (tests check it). program_synthesis is absent on purpose: those tasks are disabled (never released).
_GROUPS = {
    "flan_nli": ["anli", "cb", "mnli", "rte", "snli", "wnli"],
    "flan_paraphrase": ["glue_mrpc", "glue_qqp", "paws_wiki"],
    "flan_sentiment": ["imdb_reviews", "sentiment140", "sst2", "yelp_polarity_reviews"],
    "flan_topic": ["ag_news_subset", "trec"],
    "flan_classify": ["cola", "qnli", "stsb", "wic", "wsc", "multirc"],
    "flan_summarize": ["aeslc", "cnn_dailymail", "gigaword", "multi_news", "newsroom", "samsum", "xsum",
                       "wiki_lingua_english_en", "opinion_abstracts_idebate", "opinion_abstracts_rotten_tomatoes"],
    "flan_translate": ["translation"],
    "flan_reading_qa": ["bool_q", "coqa", "cosmos_qa", "drop", "quac", "record", "squad_v1", "squad_v2"],
    "flan_data_to_text": ["common_gen", "dart", "e2e_nlg", "web_nlg_en"],
    "flan_rewrite": ["fix_punct", "true_case", "word_segment", "lambada"],
    "generic_qa": ["natural_questions", "trivia_qa", "math_dataset", "unified_qa_science_inst"],
    "generic_mc": ["arc", "copa", "hellaswag", "openbookqa", "piqa", "story_cloze", "winogrande",
                   "definite_pronoun_resolution"],
    "p3": ["p3"],
    "niv2": ["niv2"],
    "cot": ["cot"],
    "dialog": ["dialog"],
}
CATALOG_FAMILY_MAP: dict[str, str] = {cat: fam for fam, cats in _GROUPS.items() for cat in cats}


def family_for(catalog_family: str, task: str = "") -> str:
    """The registered template family for a catalog ``template_family`` value."""
    try:
        return CATALOG_FAMILY_MAP[catalog_family]
    except KeyError:
        where = f"task {task!r}: " if task else ""
        raise ValueError(f"{where}catalog template_family {catalog_family!r} has no registered template family; "
                         f"add it to flan_mix/data/flan/flan_templates.py _GROUPS (known: "
                         f"{sorted(CATALOG_FAMILY_MAP)})") from None


def register_flan_families() -> list[str]:
    """Registers the shared families (idempotent). Returns their names."""
    names = []
    for spec in FAMILY_SPECS:
        if spec["name"] not in templates.families():
            templates.register_family(templates.family_from_dict(spec))
        names.append(spec["name"])
    return names


register_flan_families()
