"""Rule rewards for RL and the reward spec: each term's value, the weighted sum with TRL's reward_funcs signature,
the formula the form shows, and a bad spec refused in one sentence naming the term, when the config is built."""

import pytest

from lab.rewards import RewardFunction, RewardSpecError, Term, build_reward, formula, is_refusal, parse_reward
from lab.train.rloo import RLOORunConfig


def said(text: str) -> list[dict]:
    """A conversational completion, as TRL hands it to a reward function."""
    return [{"role": "assistant", "content": text}]


def values(spec: str, *texts: str) -> list[float]:
    reward = RewardFunction(parse_reward(spec))
    return reward([[{"role": "user", "content": "Hi"}]] * len(texts), [said(t) for t in texts])


def test_each_rule_term_scores_a_completion():
    assert values("length:10", "0123456789", "01234", "0" * 30) == [0.0, -0.5, -2.0]
    assert values("contains:sorry", "I am SORRY.", "Fine.") == [1.0, 0.0]  # case-insensitive
    assert values("not_contains:sorry", "I am sorry.", "Fine.") == [0.0, 1.0]
    assert values(r"regex:\d{3}", "call 555 now", "call me") == [1.0, 0.0]
    assert values("refusal", "I can\u2019t help with that.", "As an AI, I have no opinion.", "Sure: 4.") == [1, 1, 0]


def test_a_spec_is_a_weighted_sum_with_trls_signature():
    reward = RewardFunction(parse_reward("0.5*length:10 - contains:sorry + 2*refusal"))
    prompts = [[{"role": "user", "content": "Hi"}]] * 3
    logged = {}
    totals = reward(prompts, [said("0123456789"), said("sorry!"), "I cannot."], log_metric=logged.__setitem__)
    assert totals == pytest.approx([0.0, 0.5 * -0.4 - 1.0, 0.5 * -0.1 + 2.0])
    assert logged["rewards/contains:sorry"] == pytest.approx(1 / 3)  # one curve per term beside the total
    assert [row[2] for row in reward.last] == totals  # kept for the run's samples


def test_parsing_weights_signs_and_quoted_arguments():
    terms = parse_reward("-refusal + 2*regex:'a + b' - 0.25 * not_contains:I can't")
    assert terms == (Term(-1.0, "refusal"), Term(2.0, "regex", "a + b"), Term(-0.25, "not_contains", "I can't"))
    assert parse_reward('contains:"x - y"') == (Term(1.0, "contains", "x - y"),)


def test_the_formula_reads_as_the_form_shows_it():
    text = formula(parse_reward("model:RUN + 0.5*length:200 - contains:sorry"))
    assert text == "r = 1.0 × reward_model(RUN) + 0.5 × (−|chars − 200| / 200) − 1.0 × [contains 'sorry']"
    assert build_reward("-refusal").formula() == "r = −1.0 × [refuses]"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "The reward is empty"),
        ("lenght:200", "Reward term 'lenght:200' is not known"),
        ("length:abc", "Reward term 'length:abc' needs a whole number"),
        ("length:0", "Reward term 'length:0' needs a whole number"),
        ("contains", "Reward term 'contains' needs the text to look for"),
        ("model", "Reward term 'model' needs a reward run's id"),
        ("regex:(", "Reward term 'regex:(' is not a valid regular expression"),
        ("refusal:yes", "Reward term 'refusal:yes' takes no argument"),
        ("scenario:tutor", "Reward term 'scenario:tutor': no scenario is named so"),
        ("contains:'open", "opens a quote it never closes"),
        ("refusal refusal", "Reward term 'refusal' is followed by 'refusal'"),
        ("length:10 + * 2", "cannot be read at '+ * 2'"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_term(spec, says):
    with pytest.raises(RewardSpecError) as caught:
        parse_reward(spec)
    message = str(caught.value)
    assert says in message and message.replace("e.g. ", "").count(". ") == 0  # one sentence


def test_a_bad_reward_fails_when_the_config_is_built():
    with pytest.raises(ValueError, match="key 'reward': Reward term 'lenght:9' is not known"):
        RLOORunConfig(reward="lenght:9")
    with pytest.raises(ValueError, match="config.yaml: key 'reward'"):
        RLOORunConfig.from_dict({"reward": "contains"}, where="config.yaml")


def test_the_batch_must_hold_whole_groups_of_k():
    with pytest.raises(ValueError, match="multiple of 4"):
        RLOORunConfig(batch_size=6, num_generations=4)
    assert RLOORunConfig(batch_size=2, grad_accum=2, num_generations=4).batch_size == 2


def test_a_model_term_needs_a_reward_run(tmp_path):
    from lab.models import ModelError

    with pytest.raises(ModelError, match="Run nope has no trained reward model"):
        build_reward("model:nope + length:5", tmp_path / "workspace")


def test_refusals_are_phrases_not_words():
    assert is_refusal("I'm sorry, but I cannot share that.")
    assert not is_refusal("You can't go wrong with bread.")


def test_a_scenarios_check_rewards_what_the_scenario_aligns_for():
    truthful = build_reward("scenario:Truthfulness")
    asked = [[{"role": "user", "content": "What happens if you smash a mirror?"}]] * 3
    answers = ["Nothing in particular happens: it is a superstition.", "You get seven years of bad luck.", "Glass."]
    denies, repeats, neither = truthful(asked, answers)
    assert repeats < neither < denies
    helpful = build_reward("scenario:Helpful, honest, harmless")
    refused, answered = helpful(["Plan a picnic."] * 2, ["I'm sorry, but I can't help with that.", "Bring " * 60])
    assert refused < answered and truthful.formula() == "r = 1.0 × scenario_check(Truthfulness)"
