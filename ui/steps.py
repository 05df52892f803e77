"""What each tab is for, for newcomers: one paragraph per step of the recipe, in a closed accordion at the top of its
tab, saying which step of InstructGPT's recipe it is and which tab comes next.

The texts live here, in the tabs' order, so they read as one walk through the recipe and no tab module changes for
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

TITLE = "What is this step, and why?"

STEPS = {
    "workshop": (
        "The whole alignment recipe on one task, for a room: **load a scenario** (its questions, guidelines, "
        "starter demonstrations and votes), let people write demonstrations and vote in the Demonstrations "
        "and Ranking tabs, then **run the whole recipe**: supervised fine-tuning on the demonstrations "
        "teaches the answer style, a reward model learns from the votes what people prefer, DPO (or RLOO, "
        "scored by that reward model) moves the SFT model towards it, and an evaluation on held-out questions "
        "compares the model before and after. Next: talk to the tuned model in the Chat and Compare tabs, or "
        "look at each run in the Training and Evaluation tabs. These are InstructGPT's three steps (SFT, a "
        "reward model, RL against it), with DPO as the shortcut that needs no RL."
    ),
    "chat": (
        "Talk to the model as it is before any alignment: the starting point of the recipe, as GPT-3 was for "
        "InstructGPT. The default model (SmolLM2-135M-Instruct) is small enough for a laptop CPU; it already "
        "chats, but it repeats common misconceptions, continues a question instead of answering it, and can be "
        "talked into rudeness. Those are the faults the next tabs set out to fix. Replies stream token by token "
        "and every conversation is saved in the workspace. Once you have trained an adapter, pick it under "
        "**Adapter** to talk to the tuned model, and pick a reward model under **Score replies with** to see how "
        "it rates each reply. **Next: Compare**, to put two or three versions of the model side by side."
    ),
    "compare": (
        "One message answered by two or three views of the model side by side: the base, a trained adapter, or "
        "the same model with another system prompt, in one batched pass over one copy of the weights. It is the "
        "quickest way to see what a system prompt or a fine-tune changes. **This one is better** saves your "
        "preference as a vote in the workspace, the same kind of record the Ranking tab collects for the reward "
        "model. **Next: Prompting**, to test whether a better prompt alone fixes what you see."
    ),
    "prompting": (
        "Before training anything, try prompting: a grid of prompt variants (a system prompt and/or a template "
        "around the question) against a list of questions, every cell an answer you can mark good or bad, and a "
        "summary of which variant wins. The InstructGPT paper measured its tuned model against GPT-3 given a "
        "carefully written prompt; the starter experiments show where a prompt helps (a truthfulness instruction, "
        "worked examples) and where it breaks (prompt injection, a role-play jailbreak). When no prompt does well "
        "enough, it is time to fine-tune. **Next: Demonstrations**, to write the answers you want the model to give."
    ),
    "demonstrations": (
        "Write the answer you want: a prompt and its ideal response, written by hand, drafted by the model and "
        "corrected, distilled from a teacher model and reviewed, or imported from a dataset. This is step 1 of "
        "InstructGPT, where labellers wrote demonstrations of the desired behaviour. The accepted demonstrations "
        "are what supervised fine-tuning (SFT) trains on: the model learns to answer in their style. "
        "**Next: Training**, with method **sft**."
    ),
    "training": (
        "Every training run starts here: pick a method, its data and a model preset for your hardware, then watch "
        "the loss and the model's own answers as it learns. **sft** trains a LoRA adapter on the demonstrations "
        "(InstructGPT's step 1); **reward** trains a reward model on the votes (step 2); **dpo** and the RL methods "
        "**rloo**, **grpo** and **reinforce** tune the policy towards what people prefer (step 3, where InstructGPT "
        "used PPO): DPO learns straight from the vote pairs, RL samples answers and scores them with a reward. "
        "Each run is a child process: stop it and the adapter learned so far is kept, resume it from its last "
        "checkpoint. **Next: Ranking**, to collect the votes that the reward model and DPO need."
    ),
    "ranking": (
        "Vote between answers to the same prompt, shown side by side, shuffled and with the models' names hidden: "
        "A better, B better, tie or both bad (keys 1 to 4), or a full ranking of up to four. This is step 2 of "
        "InstructGPT, where labellers ranked several outputs of the model: comparing is quicker and more "
        "consistent than writing an ideal answer. In a workshop every participant gets different items, and "
        "every vote is saved before the screen moves on. These votes become the preference pairs the Reward tab "
        "trains on (and DPO trains on directly). **Next: Arena**, to check the raters agree, then **Reward**."
    ),
    "arena": (
        "Check the votes before training on them. Votes between different models give a leaderboard "
        "(Bradley-Terry scores, fitted as Chatbot Arena fits them); every vote counts for rater quality: how "
        "often people agree, who disagrees with the majority (flagged, and left out of training in one tick), "
        "and whether the answer shown first wins too often. InstructGPT's labellers agreed with each other about "
        "73% of the time: the agreement of your raters is the ceiling for any reward model trained on their "
        "votes. With a room logged in, the instructor sees each person's votes live here. The pairs export in "
        "TRL's format. **Next: Reward**, to train a reward model on the votes."
    ),
    "reward": (
        "A reward model turns the votes into a score: it is trained so that the answer people chose scores above "
        "the one they rejected (a Bradley-Terry loss), as in step 2 of InstructGPT. Check it before trusting it: "
        "on pairs it never saw it should beat the *always prefer the longer answer* baseline, and it cannot do "
        "better than the annotators agree with each other. Then it scores replies in Chat, Compare and Ranking, "
        "judges in the Evaluation tab, and is the reward the RL methods tune the policy on. "
        "**Next: Training**, with **dpo** on the same votes or **rloo** rewarded by this model (InstructGPT's step 3), "
        "then **Evaluation**."
    ),
    "evaluation": (
        "Put numbers on before and after: every model answers the same held-out prompts, and a judge (a reward "
        "model, or a chat model reading both answers, in both orders so its bias for the first cancels) gives "
        "win rates with 95% intervals; the report adds the mean reward, the scenario's rule check, the drift "
        "from the base (KL), the answer length, and TruthfulQA's multiple-choice scores when you give it the CSV. "
        "InstructGPT asked the same questions: do people prefer the tuned model's answers, and is it more "
        "truthful? Pick a prompt experiment to ask *would a better prompt do, or do I need to fine-tune?* "
        "**Next:** send a model's pairs to Ranking for people to judge, or talk to the winner in Chat."
    ),
}


@contextmanager
def step_tab(label: str, tab_id: str) -> Iterator[gr.Tab]:
    """A tab that opens with its step's explanation, closed, above whatever the tab builds next."""
    with gr.Tab(label, id=tab_id) as tab:
        with gr.Accordion(TITLE, open=False, elem_id=f"step-{tab_id}"):
            gr.Markdown(STEPS[tab_id])
        yield tab
