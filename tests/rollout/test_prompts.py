"""How episodes become tokens: trajectory sequences equal the chat template's rendering; step prompts stay small."""

import torch
from trl.chat_template_utils import qwen3_chat_template

from trl_aem.rollout import ChatFormatter, Episode, Turn
from trl_aem.tiny import build_tokenizer


def _episode(formatter, responses, observations, ended=True):
    tok = formatter.tokenizer
    episode = Episode(task={}, group=0, index=0, system_prompt="Be brief.", first_observation="Say apple.")
    episode.initial_prompt_ids = formatter.initial_prompt(episode)
    completion = []
    for response, observation in zip(responses, observations, strict=True):
        ids = tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if ended else [])
        turn = Turn(
            prompt_ids=[],
            completion_ids=ids,
            entropies=torch.zeros(len(ids)),
            logps=torch.zeros(len(ids)),
            response=response,
            observation=observation,
        )
        turn.observation_ids = formatter.observation_ids(observation, response_ended=ended)
        episode.turns.append(turn)
        completion += ids + turn.observation_ids
    return episode, completion


def test_trajectory_tokens_render_the_conversation(tokenizer):
    formatter = ChatFormatter(tokenizer)
    episode, completion = _episode(formatter, ["<action>apple</action>", "<action>mug</action>"], ["Right.", "Done."])
    text = tokenizer.decode(episode.initial_prompt_ids + completion)
    expected = tokenizer.apply_chat_template(episode.messages(), tokenize=False, add_generation_prompt=True)
    assert text == expected


def test_cut_responses_are_closed_before_the_observation(tokenizer):
    formatter = ChatFormatter(tokenizer)
    episode, completion = _episode(formatter, ["<action>app"], ["No action."], ended=False)
    assert tokenizer.decode(completion).startswith("<action>app<|im_end|>\n<|im_start|>user\nNo action.")


def test_qwen3_template_uses_trls_prefix_preserving_variant():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = qwen3_chat_template
    formatter = ChatFormatter(tokenizer)
    assert formatter.incremental and "chat_template" in formatter.chat_template_kwargs
    episode, completion = _episode(formatter, ["<action>apple</action>"], ["Right."])
    assert "Right." in tokenizer.decode(completion)


def test_step_prompt_keeps_only_the_last_turns(tokenizer):
    formatter = ChatFormatter(tokenizer, history_length=2)
    responses = [f"<action>word {i}</action>" for i in range(30)]
    episode, _ = _episode(formatter, responses, [f"observation {i}" for i in range(30)])
    lengths = []
    for t in range(3, 31):
        view = Episode(
            task={},
            group=0,
            index=0,
            system_prompt=episode.system_prompt,
            first_observation=episode.first_observation,
            turns=episode.turns[:t],
        )
        lengths.append(len(formatter.step_prompt(view)))
    assert max(lengths) - min(lengths) <= 12  # constant size: only the step numbers gain digits
    text = tokenizer.decode(formatter.step_prompt(episode))
    assert "word 29" in text and "word 28" in text and "word 27" not in text and "Say apple." in text
    assert "Be brief." in text


def test_history_observations_are_shortened_the_current_one_is_not(tokenizer):
    """An environment's ``history_observation`` applies to the first observation once a turn was taken and to
    past turns; the current observation keeps its admissible-action list (verl-agent's prompt layout)."""
    from trl_aem.envs import AlfWorldEnv

    suffix = "\nYour admissible actions of the current situation are: ['look', 'inventory']."
    formatter = ChatFormatter(tokenizer, history_length=2, history_observation=AlfWorldEnv.history_observation)
    episode = Episode(task={}, group=0, index=0, first_observation="Your task is to: find a mug." + suffix)
    assert formatter.tokenizer.decode(formatter.step_prompt(episode)).count("admissible actions") == 1
    for k in range(3):
        episode.turns.append(
            Turn(
                prompt_ids=[],
                completion_ids=[],
                entropies=torch.zeros(0),
                logps=torch.zeros(0),
                response="<action>look</action>",
                observation=f"You see mug {k}." + suffix,
            )
        )
    text = tokenizer.decode(formatter.step_prompt(episode))
    assert text.count("admissible actions") == 1 and text.rstrip().endswith(
        "You see mug 2." + suffix + "<|im_end|>\n<|im_start|>assistant"
    ), text
    assert "Your task is to: find a mug.\n" in text and "You see mug 1.\n" in text
    full = ChatFormatter(tokenizer, history_length=2)
    assert tokenizer.decode(full.step_prompt(episode)).count("admissible actions") == 3
