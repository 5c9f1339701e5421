"""Each guard on outputs that must pass and outputs that must fail."""
from __future__ import annotations

import pytest

from align.config import ConfigError
from domains.translation.guards import (
    GuardConfig,
    chinese_number_values,
    numbers,
    run_guards,
    script_ratio,
    words,
)

SOURCE = "28岁厨师被发现死于旧金山一家商场。"
GOOD = "A 28-year-old chef was found dead in a San Francisco mall."


def verdicts(output, source=SOURCE, reference=None, src="zh", tgt="en", **config):
    return run_guards(output, source, GuardConfig(**config), src, tgt, reference)


def failed(output, **kwargs):
    return sorted(name for name, v in verdicts(output, **kwargs).items() if not v.passed)


def test_a_good_translation_passes_every_guard():
    assert failed(GOOD) == []
    assert failed("一位28岁的厨师被发现死在旧金山的一家商场里。", source=GOOD, src="en", tgt="zh") == []


def test_empty():
    assert failed("") == ["empty"]
    assert failed("  \n ") == ["empty"]


def test_wrong_language_by_script_ratio():
    assert script_ratio("Android 硬件清洁窍门", "zh") == pytest.approx(6 / 7)  # 6 CJK characters, 1 Latin word
    assert script_ratio("你好 world", "en") == pytest.approx(1 / 3)
    assert "language" in failed("一位厨师在旧金山商场被发现死亡 28", source=SOURCE)
    # Chinese full stops left in an English output
    assert failed("A 28-year-old chef was found dead in a San Francisco mall。") == ["language"]
    assert failed("李博士说有28位厨师。", tgt="zh", src="en", source="Dr. Li said 28 chefs.") == []


def test_a_third_script_is_a_wrong_language_however_short():
    source = "Moscow denies that Wagner is linked to the state and says it will act against EU sanctions."
    # Russian words inside an en->zh translation (a PPO-trained policy's output): 90% CJK, so the ratio passes
    verdict = verdicts("莫斯科否认Wagner与国家有关，并表示将对欧盟的 санкции 采取行动。", source=source, src="en",
                       tgt="zh")["language"]
    assert not verdict.passed and "cyrillic" in verdict.detail and verdict.value > 0.5
    # Latin names are in the source's script: kept, as human references do
    assert failed("莫斯科否认Wagner与国家有关，并表示将对欧盟的制裁采取行动。", source=source, src="en", tgt="zh") == []


def test_length_ratio():
    assert "length_ratio" in failed("A chef.")  # far too short for the source
    padded = GOOD + " " + " ".join(f"word{i}" for i in range(40))
    assert "length_ratio" in failed(padded)
    # with a reference the expected length is the reference's
    assert "length_ratio" not in failed("The chef died.", reference="The chef died there.")


def test_copying_the_source():
    assert "copy" in failed(SOURCE)
    assert "copy" in failed(GOOD + " " + SOURCE)  # the source pasted next to a translation
    verdict = verdicts(GOOD)["copy"]
    assert verdict.passed and verdict.value < 0.2


def test_repetition():
    assert failed(GOOD + " " + GOOD) != [] and "repetition" in failed(GOOD + " " + GOOD)
    assert "repetition" in failed("the the the the the the the the the the the the", source="的的的的的的的的的的的的的的")
    assert "repetition" not in failed(GOOD)


def test_commentary_around_the_translation():
    assert "commentary" in failed("Here is the translation: " + GOOD)
    assert "commentary" in failed("Translation: " + GOOD)
    assert "commentary" in failed(GOOD + "\n(Note: 旧金山 is San Francisco.)")
    assert "commentary" in failed("以下是翻译：一位28岁的厨师被发现死在旧金山的一家商场里。", source=GOOD, src="en", tgt="zh")
    assert "commentary" not in failed("Sure enough, a 28-year-old chef was found dead in a San Francisco mall.")


def test_numbers():
    assert numbers("It costs 1,000 dollars, 2.5 each, for six people in August") == {
        "1000": 1, "2.5": 1, "6": 1, "8": 1}
    assert failed(GOOD.replace("28", "29")) == ["numbers"]
    assert failed(GOOD.replace("28", "twenty-eight")) == []
    # "one" alone is left out (a pronoun more often than a number), after a hyphen it counts
    assert numbers("this one, twenty-one, Thirty-One") == {"21": 1, "31": 1}
    assert failed("A chef aged 28 was found dead in a San Francisco mall at 9.") == ["numbers"]
    # a Chinese magnitude word (3万 = 30,000) is not compared digit for digit
    assert "numbers" not in failed("About 30,000 people came.", source="大约3万人来了。")
    # a number written in Chinese numerals explains a digit in the output
    assert "numbers" not in failed("Some of the ice is over 100000 years old.", source="有些冰超过十万年。")


def test_numbers_written_with_chinese_numerals():
    assert chinese_number_values("二十五，两万，25万，一百零五，1.77万亿，200 亿") == [25, 20000, 250000, 105, 1.77e12, 2e10]
    assert chinese_number_values("“十四五”") == [14, 5]  # a digit after a digit starts a number
    assert chinese_number_values("二〇一九年") == [2, 0, 1, 9, 2019]
    source = "因此它在两个层面上进行欺骗，有25万种花。"
    assert "numbers" not in failed("So it deceives on two levels; there are 250,000 flowers.", source=source)
    assert "numbers" not in failed("So it deceives on two levels; there are 250 thousand flowers.", source=source)
    assert failed("So it deceives on three levels; there are 250,000 flowers.", source=source) == ["numbers"]
    assert failed("So it deceives on two levels; there are 250,001 flowers.", source=source) == ["numbers"]
    # the other direction: a Chinese output may write an English number in its own numerals
    assert "numbers" not in failed("贸易额将达到 200 亿美元。", source="Trade will reach $20 billion.", src="en", tgt="zh")
    assert failed("贸易额将达到 300 亿美元。", source="Trade will reach $20 billion.", src="en", tgt="zh") == ["numbers"]


def test_numbers_that_are_names_full_width_digits_and_times():
    assert numbers("COVID-19 hit the G7 at 10:00; 5 jets, not F-35s") == {"10": 1, "5": 1}
    assert "numbers" not in failed("He treated COVID-19 patients for 5 years.", source="他治疗新冠患者５年了。")
    assert failed("He treated COVID-19 patients for 6 years.", source="他治疗新冠患者５年了。") == ["numbers"]
    assert "numbers" not in failed("I waited for one hour.", source="我等了 1 小时。")


def test_disabled_guards_do_not_run_and_bad_config_is_named():
    assert set(verdicts(SOURCE, enabled=["empty", "numbers"])) == {"empty", "numbers"}
    with pytest.raises(ConfigError, match="guards.enabled: unknown guards"):
        GuardConfig(enabled=["empty", "vibes"]).validate()
    with pytest.raises(ConfigError, match="length_ratio_range"):
        GuardConfig(length_ratio_range=[2.0, 1.0]).validate()


def test_words_split_cjk_characters():
    assert words("LISA可以看到 15 black holes") == ["lisa", "可", "以", "看", "到", "15", "black", "holes"]
