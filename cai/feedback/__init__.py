"""RL-CAI feedback: policy samples, paired and labelled by an AI judge guided by a constitution.

    config.py   SampleConfig, LabelConfig, and the stage configs Sample/Label/Rlaif/EvalJudgeStage
    sample.py   K responses per prompt from the policy, paired        (`cai sample`:  sample(), run_sample())
    judge.py    comparison prompts, context fitting, batched scoring  (Judge)
    soft_labels.py  the label math: option normalisation, both orders, clamp, d-RLAIF expectation
    label.py    the `prefs` dataset and its statistics                 (`cai label`, `cai rlaif`: label(), rlaif(), run_*())
    score.py    d-RLAIF rewards for PPO                                (score_responses())
    evaluate.py judge accuracy on labelled pairs                       (`cai eval judge`, in cai/evaluate/cli.py)
"""
from cai.feedback.config import LabelConfig, SampleConfig

__all__ = ["LabelConfig", "SampleConfig"]
