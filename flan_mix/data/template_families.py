"""The engine's own template families, as data (our own wording): generic_qa and generic_mc (questions with or
without options), cot (rationale + answer), niv2 (task definition as preamble) and dialog (next turn).
flan_mix.data.template_registry registers them; collections add more with family_from_dict/register_family."""

BUILTIN_FAMILY_SPECS = (
    {
        "name": "generic_qa",
        "description": "Free-form question answering; options (if any) are appended. Inverted templates ask "
                       "for the question from the answer.",
        "fields": ["question", "answer", "options", "rationale"],
        "options_field": "options",
        "options_required": True,
        "rationale_field": "rationale",
        "templates": [
            ["{question}\n\n{options}", "{answer}"],
            ["Question: {question}\n{options}\nAnswer:", "{answer}"],
            ["Answer the following question.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhat is the answer?", "{answer}"],
            ["Please respond to this question: {question}\n{options}", "{answer}"],
            ["Here is a question for you.\n{question}\n{options}\nYour answer:", "{answer}"],
            ["Reply briefly to the question below.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nRespond with the answer only.", "{answer}"],
            ["Can you work this out? {question}\n{options}", "{answer}"],
            ["Someone asks you: \"{question}\"\n{options}\nWhat do you tell them?", "{answer}"],
        ],
        "inverted": [
            ["Answer: {answer}\n\nWrite a question that this is the answer to.", "{question}"],
            ["What question would have \"{answer}\" as its answer?", "{question}"],
            ["Make up a question whose correct answer is: {answer}", "{question}"],
            ["Here is an answer: {answer}\nWhat might the question have been?", "{question}"],
            ["Someone replied \"{answer}\". Write the question they were answering.", "{question}"],
        ],
    },
    {
        "name": "generic_mc",
        "description": "Multiple choice: the correct answer is one of the options. Inverted templates ask for the "
                       "question from the correct answer.",
        "fields": ["question", "answer", "options", "rationale"],
        "options_field": "options",
        "options_required": True,
        "rationale_field": "rationale",
        "templates": [
            ["{question}\n\n{options}", "{answer}"],
            ["Question: {question}\n\n{options}\n\nAnswer:", "{answer}"],
            ["Find the right answer to this question.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhich answer is correct?", "{answer}"],
            ["Read the question and decide on the best answer.\n{question}\n{options}", "{answer}"],
            ["Test question: {question}\n{options}\nThe correct answer is:", "{answer}"],
            ["{question}\n\n{options}\n\nGive the best answer.", "{answer}"],
            ["Only one answer to the question below is right.\n\n{question}\n{options}", "{answer}"],
            ["Here is a quiz item.\n{question}\n{options}\nYour pick:", "{answer}"],
            ["Decide which answer fits: {question}\n{options}", "{answer}"],
        ],
        "inverted": [
            ["The right choice is \"{answer}\". Write a multiple-choice question where it is the correct answer.",
             "{question}"],
            ["Correct answer: {answer}\n\nCompose a quiz question that this answers.", "{question}"],
            ["Write a test question for which \"{answer}\" is the best answer.", "{question}"],
            ["{answer} is the answer. What was the question?", "{question}"],
            ["Invent a question with a few possible answers, where the correct one is: {answer}", "{question}"],
        ],
    },
    {
        "name": "cot",
        "description": "Chain of thought: targets are the rationale plus an answer sentence. "
                       "Inverted templates ask for the question from the answer and rationale.",
        "fields": ["question", "answer", "rationale", "options"],
        "options_field": "options",
        "rationale_field": "rationale",
        "always_cot": True,
        "templates": [
            ["{question}\n{options}", "{answer}"],
            ["Question: {question}\n{options}", "{answer}"],
            ["Solve the following.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhat is the answer?", "{answer}"],
            ["Here is a problem: {question}\n{options}", "{answer}"],
            ["Consider this question.\n{question}\n{options}", "{answer}"],
            ["Puzzle: {question}\n{options}", "{answer}"],
            ["{question}\n\n{options}\n\nFind the answer.", "{answer}"],
            ["Figure out the answer to this: {question}\n{options}", "{answer}"],
            ["A student is asked: \"{question}\"\n{options}\nHow should they answer?", "{answer}"],
        ],
        "inverted": [
            ["Reasoning: {rationale}\nAnswer: {answer}\n\nWhat question could this reasoning be answering?",
             "{question}"],
            ["Write a question that fits this answer and explanation.\n\nExplanation: {rationale}\n"
             "Answer: {answer}", "{question}"],
            ["The answer is {answer}, because: {rationale}\nWhat was the question?", "{question}"],
            ["Someone reasoned as follows: \"{rationale}\" and concluded {answer}. Reconstruct the question "
             "they were solving.", "{question}"],
            ["Given the answer \"{answer}\" and the reasoning behind it, invent a matching question.\n"
             "{rationale}", "{question}"],
        ],
    },
    {
        "name": "niv2",
        "description": "Natural Instructions v2: the task definition is the preamble, positive examples are the "
                       "few-shot exemplars. Options (the task's label set, if the loader gives one) are optional.",
        "fields": ["definition", "input", "output", "options"],
        "answer_field": "output",
        "options_field": "options",
        "templates": [
            {"preamble": "{definition}", "inputs": "{input}\n{options}", "targets": "{output}"},
            {"preamble": "Task: {definition}", "inputs": "Input: {input}\n{options}\nOutput:",
             "targets": "{output}"},
            {"preamble": "Instructions: {definition}", "inputs": "{input}\n\n{options}", "targets": "{output}"},
            {"preamble": "Read the task description, then handle the input.\n{definition}",
             "inputs": "Input: {input}\n{options}", "targets": "{output}"},
            {"preamble": "Task description:\n{definition}", "inputs": "{input}\n{options}\nAnswer:",
             "targets": "{output}"},
            {"preamble": "Follow these instructions.\n\n{definition}", "inputs": "Here is the input: {input}\n"
             "{options}", "targets": "{output}"},
            {"preamble": "{definition}\nDo this for the input that follows.", "inputs": "{input}\n{options}",
             "targets": "{output}"},
            {"preamble": "Your job: {definition}", "inputs": "Case: {input}\n{options}\nResult:",
             "targets": "{output}"},
            {"preamble": "Definition: {definition}", "inputs": "{input}\n\n{options}\n\nOutput:",
             "targets": "{output}"},
            {"preamble": "You are given a task.\n{definition}", "inputs": "Now do it for this input.\n{input}\n"
             "{options}", "targets": "{output}"},
        ],
    },
    {
        "name": "dialog",
        "description": "Next-turn dialog: context is the conversation so far. Inverted templates recover the "
                       "conversation from the reply.",
        "fields": ["context", "response"],
        "answer_field": "response",
        "templates": [
            ["{context}", "{response}"],
            ["Conversation so far:\n{context}\n\nNext turn:", "{response}"],
            ["{context}\n\nWhat would be a fitting next reply?", "{response}"],
            ["Continue the dialog.\n\n{context}", "{response}"],
            ["Here is a chat between people.\n{context}\nWrite the next message.", "{response}"],
            ["Read the exchange and answer as the next speaker.\n\n{context}", "{response}"],
            ["{context}\n\nRespond to the last message.", "{response}"],
            ["Dialog history:\n{context}\nReply:", "{response}"],
            ["Suggest the next line of this conversation.\n{context}", "{response}"],
            ["{context}\nHow might the conversation go on?", "{response}"],
        ],
        "inverted": [
            ["Here is a reply from a conversation:\n{response}\n\nWrite the conversation that leads up to it.",
             "{context}"],
            ["Invent a dialog history that this message would answer.\n\nMessage: {response}", "{context}"],
            ["The next line of a chat was: \"{response}\"\nWhat was said before it?", "{context}"],
            ["Reconstruct the earlier turns of a dialog ending with this reply.\n{response}", "{context}"],
            ["Reply: {response}\n\nWrite the conversation this reply continues.", "{context}"],
        ],
    },
)
