"""Template learning figures (`cai.evaluate.openings`) on hand-made answers."""
from cai.evaluate.openings import copied_share, copy_counts, opening, opening_stats, template_share, words

REFUSAL = "I'm sorry, but I can't help with that. Is there something else I can do for you?"


def test_normalisation():
    assert words("Sure!  I CAN help—with “that”.") == ["sure", "i", "can", "help", "with", "that"]
    assert words("I\u2019m sorry") == words("I'm sorry") == ["i'm", "sorry"]  # curly apostrophe made straight
    assert opening("One two, three! four five six seven eight nine ten") == "one two three four five six seven eight"
    assert opening("") == "" and opening(None) == ""


def test_template_share_by_hand():
    answers = [REFUSAL, "I'm sorry, but I can't help with that!", "i'm SORRY but I can't help with that, friend",
               "I'm sorry to hear that. Here is what helps.", "Rayleigh scattering.", ""]
    # openings: the first three share "i'm sorry but i can't help with that"; the other three differ
    st = opening_stats(answers)
    assert st["n"] == 6 and st["template_share"] == 0.5 and st["distinct_openings"] == 4
    assert st["top"][0] == {"opening": "i'm sorry but i can't help with that", "count": 3, "share": 0.5}
    assert template_share(answers) == 0.5 and template_share([]) is None
    # with 2-word openings "i'm sorry to hear" joins them: 4 of 6
    assert template_share(answers, n_words=2) == round(4 / 6, 6)


def test_copied_share_by_hand():
    training = [REFUSAL, "Sure! Here is a recipe for bread: flour, water, salt and yeast, then knead it."]
    answers = ["Sure! " + REFUSAL,  # copies the refusal (all of it)
               "I am sorry, but I cannot help with that.",  # shares "help with that" only
               "Well. Is there something else I can do for you? Bye",  # 8 words of the refusal in a row: a copy
               "Here is a recipe for bread: flour and water.",  # "here is a recipe for bread flour": 7 words
               "Rayleigh scattering."]
    assert copy_counts(answers, training) == [2, 0]
    assert copied_share(answers, training) == 2 / 5
    assert copy_counts(answers, training, n_words=7) == [2, 1]  # the 7-word run now counts
    assert copied_share([], training) == 0.0 and copied_share(answers, []) == 0.0
    assert copy_counts(["say hello world now"], ["hello world"]) == [1]  # a short text must appear whole
