"""The embedded demo corpus: seeded, realistic short Japanese news articles, labelled by one convention.

Labelling convention (docs/corpus.md has the full table):
- A person is extracted when the article names them (full name, as written, no honorific or role
  suffix such as 容疑者/被告/さん/氏/社長). People named only by a role or description
  (「40代の男」「同社の社長」「市長」) are not persons to extract.
- act: the verbal noun, as it appears in the text, for what the person did or had done to them
  (逮捕, 起訴, 書類送検, 判決, 死亡, 重傷, 表彰, 受賞, 就任, 退任, 辞任, 発表, 当選, 落選, 提出, 署名, 取材, 撮影).
- address: where the person lives, exactly as written in the phrase that introduces them
  (「横浜市中区の会社員、…」「…に住む」「…在住の」), at whatever granularity the article gives;
  null when not given (住所不定, officials, executives, foreigners without a residence, bylines).
  The place of an incident or a company's seat is never an address.
- signature: the document the person signed or submitted (要望書, 嘆願書, 共同声明, ...), as written;
  null for everyone who did not sign or submit a document.
"""
from __future__ import annotations

import csv
import functools
import importlib.resources
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any, NamedTuple

from jinmei.errors import JinmeiError
from jinmei.files import write_jsonl

DEMO_FIELDS = ("name", "act", "address", "signature")

# ---------------------------------------------------------------- name pools
class NamePools(NamedTuple):
    family: tuple[str, ...]              # kanji family names, most common first
    family_cum: tuple[int, ...]          # cumulative population: draws follow how common each name is
    male: tuple[tuple[str, tuple[str, ...]], ...]    # (reading in hiragana, its kanji spellings)
    female: tuple[tuple[str, tuple[str, ...]], ...]


@functools.cache
def name_pools() -> NamePools:
    """Real Japanese names from the japanese-personal-name-dataset package (MIT): 1,999 family names with their
    population, 701 male and 239 female readings with ~35,000 distinct kanji spellings. Why not a list in this file: a
    Dev-Positive name must be one no training article holds, or eval cannot tell reading from remembering
    (docs/corpus.md); a pool of a few hundred names repeats them across every split. Spellings listed under both
    genders are dropped."""
    data = importlib.resources.files("japanese_personal_name_dataset") / "dataset"

    def rows(name: str) -> list[list[str]]:
        return list(csv.reader(data.joinpath(name).read_text(encoding="utf-8").splitlines()))

    family = [(r[0], int(r[1])) for r in rows("last_name_org.csv")]
    given = {g: [(r[0], tuple(r[2:])) for r in rows(f"first_name_{g}_opti.csv")] for g in ("man", "woman")}
    both = {k for _, ks in given["man"] for k in ks} & {k for _, ks in given["woman"] for k in ks}
    keep = {g: tuple((reading, tuple(k for k in ks if k not in both)) for reading, ks in given[g]) for g in given}
    return NamePools(tuple(f for f, _ in family), tuple(itertools.accumulate(n for _, n in family)),
                     tuple(r for r in keep["man"] if r[1]), tuple(r for r in keep["woman"] if r[1]))


def japanese_name(rng: random.Random, kana_given: bool = False) -> tuple[str, str]:
    """A family name drawn by population, then a given name: a reading, then one of its spellings (a uniform draw
    over spellings would favour rare ones: one reading has hundreds), or the reading itself in hiragana.
    Returns (family name, full name)."""
    pools = name_pools()
    family = rng.choices(pools.family, cum_weights=pools.family_cum)[0]
    reading, spellings = rng.choice(pools.male if rng.random() < 0.55 else pools.female)
    return family, family + (reading if kana_given else rng.choice(spellings))


FOREIGN = {  # nationality phrase -> (family names, given names, order): the way Japanese news writes them
    "ベトナム国籍": ("グエン チャン レ ファム ホアン ブイ ヴー ダン".split(),
                 "バン・ナム ティ・ラン バン・フン ティ・ホア ミン・トゥアン ドゥック・アイン ティ・フォン バン・ズン".split(), "family_first"),
    "ブラジル国籍": ("シルバ サントス オリベイラ ソウザ ペレイラ フェレイラ".split(),
                 "カルロス アナ マルコス ルーカス ジュリアナ ラファエル".split(), "given_first"),
    "フィリピン国籍": ("レイエス クルス ガルシア メンドーサ バウティスタ".split(),
                   "ホセ マリア ジェニファー マーク ロウェナ".split(), "given_first"),
    "米国籍": ("スミス ジョンソン ブラウン ミラー ウィルソン テイラー".split(),
            "ジョン マイケル エミリー デビッド サラ ジェームズ".split(), "given_first"),
    "ネパール国籍": ("タパ グルン ライ シュレスタ タマン".split(),
                 "ラム ビカス スニタ ディパク アニタ".split(), "given_first"),
    "中国籍": ("王 李 張 劉 陳 楊 趙 周".split(), "偉 娜 明 洋 静 軍 磊 芳".split(), "kanji"),
}

# ---------------------------------------------------------------- place pools
PLACES = {  # prefecture -> {city: [wards]}; a designated city's name stands alone in news copy
    "北海道": {"札幌市": ["中央区", "北区", "東区", "豊平区"], "旭川市": [], "函館市": [], "釧路市": []},
    "宮城県": {"仙台市": ["青葉区", "宮城野区", "太白区"], "石巻市": [], "大崎市": []},
    "茨城県": {"水戸市": [], "つくば市": [], "日立市": []},
    "群馬県": {"前橋市": [], "高崎市": [], "太田市": []},
    "埼玉県": {"さいたま市": ["大宮区", "浦和区", "南区"], "川口市": [], "川越市": [], "所沢市": []},
    "千葉県": {"千葉市": ["中央区", "花見川区", "美浜区"], "船橋市": [], "松戸市": [], "柏市": []},
    "東京都": {"": ["新宿区", "世田谷区", "練馬区", "足立区", "江戸川区", "大田区", "杉並区"],
            "八王子市": [], "町田市": [], "府中市": []},
    "神奈川県": {"横浜市": ["中区", "港北区", "青葉区", "戸塚区"], "川崎市": ["中原区", "川崎区"],
             "相模原市": ["中央区", "南区"], "藤沢市": [], "横須賀市": []},
    "新潟県": {"新潟市": ["中央区", "西区"], "長岡市": [], "上越市": []},
    "長野県": {"長野市": [], "松本市": [], "上田市": []},
    "静岡県": {"静岡市": ["葵区", "駿河区"], "浜松市": ["中央区"], "沼津市": []},
    "愛知県": {"名古屋市": ["中区", "千種区", "中村区", "緑区"], "豊田市": [], "岡崎市": [], "一宮市": []},
    "京都府": {"京都市": ["左京区", "伏見区", "右京区"], "宇治市": []},
    "大阪府": {"大阪市": ["北区", "中央区", "淀川区", "平野区"], "堺市": ["堺区", "北区"],
            "東大阪市": [], "豊中市": [], "枚方市": []},
    "兵庫県": {"神戸市": ["中央区", "東灘区", "須磨区"], "姫路市": [], "西宮市": [], "尼崎市": []},
    "岡山県": {"岡山市": ["北区", "南区"], "倉敷市": []},
    "広島県": {"広島市": ["中区", "安佐南区"], "福山市": [], "呉市": []},
    "福岡県": {"福岡市": ["博多区", "中央区", "東区"], "北九州市": ["小倉北区", "八幡西区"], "久留米市": []},
    "熊本県": {"熊本市": ["中央区", "東区"], "八代市": []},
    "鹿児島県": {"鹿児島市": [], "霧島市": []},
    "沖縄県": {"那覇市": [], "沖縄市": [], "うるま市": []},
}
DESIGNATED = {"札幌市", "仙台市", "さいたま市", "千葉市", "横浜市", "川崎市", "相模原市", "新潟市", "静岡市",
              "浜松市", "名古屋市", "京都市", "大阪市", "堺市", "神戸市", "岡山市", "広島市", "北九州市",
              "福岡市", "熊本市"}
CITY_OF_COURT = {"北海道": "札幌", "宮城県": "仙台", "茨城県": "水戸", "群馬県": "前橋", "埼玉県": "さいたま",
                 "千葉県": "千葉", "東京都": "東京", "神奈川県": "横浜", "新潟県": "新潟", "長野県": "長野",
                 "静岡県": "静岡", "愛知県": "名古屋", "京都府": "京都", "大阪府": "大阪", "兵庫県": "神戸",
                 "岡山県": "岡山", "広島県": "広島", "福岡県": "福岡", "熊本県": "熊本", "鹿児島県": "鹿児島",
                 "沖縄県": "那覇"}
TOWNS = "本町 栄町 旭町 緑町 東町 西町 南町 幸町 若葉 桜台 松が丘 日吉町 寿町 元町 大手町 港町 新町 宮前 青葉台 中央".split()
OCCUPATIONS = ("会社員 会社員 会社員 無職 無職 自営業 会社役員 アルバイト パート従業員 公務員 団体職員 飲食店経営 "
               "建設作業員 介護士 看護師 教員 農業 トラック運転手 タクシー運転手 美容師 派遣社員 元会社員 "
               "塾講師 歯科医師 不動産業").split()
STUDENTS = "大学生 専門学校生 大学院生".split()

# ---------------------------------------------------------------- story pools
CHARGES = {  # charge -> what the suspect allegedly did (completes 「…した疑い」)
    "窃盗": ["{place}のドラッグストアで化粧品など{n}点（計約{yen}円相当）を盗んだ", "{place}の駐輪場で自転車1台を盗んだ",
           "{place}の住宅に侵入し、現金約{man}万円を盗んだ"],
    "詐欺": ["息子を装って{place}の女性（{age2}）に電話をかけ、現金{man}万円をだまし取った",
           "架空の投資話を持ちかけ、知人男性から約{man}万円をだまし取った"],
    "傷害": ["{place}の路上で、口論になった男性（{age2}）の顔を殴り、軽傷を負わせた",
           "{place}の飲食店で、店員の男性の胸ぐらをつかんで転倒させ、けがをさせた"],
    "住居侵入": ["{place}の住宅に無施錠の窓から侵入した", "{place}のアパートの一室に正当な理由なく侵入した"],
    "酒気帯び運転": ["酒を飲んだ状態で{place}の市道で乗用車を運転した", "呼気から基準値を超えるアルコールが検出された状態で軽トラックを運転した"],
    "業務上横領": ["勤務先の会社の口座から計約{man}万円を着服した", "管理していた町内会の会費約{man}万円を着服した"],
    "器物損壊": ["{place}の公園でベンチや案内板を壊した", "{place}の駐車場に止めてあった乗用車の車体を傷つけた"],
    "公務執行妨害": ["{place}で職務質問をしていた警察官の腕をつかむなどした", "{place}で交通違反の取り締まり中の警察官を突き飛ばした"],
    "不正アクセス禁止法違反": ["他人のIDとパスワードを使い、通販サイトに不正にログインした"],
    "ひき逃げ": ["{place}の交差点で歩行者の男性（{age2}）をはねて、そのまま逃げた"],
}
QUOTES_ADMIT = ["お金に困っていた", "間違いありません", "生活費が欲しかった", "ついかっとなってやった", "酒を飲んでいた"]
QUOTES_DENY = ["覚えていない", "盗んだつもりはない", "身に覚えがない", "自分はやっていない"]
FOLLOW_UPS_CRIME = ["警察は余罪があるとみて調べている。", "防犯カメラの映像などから浮上した。", "被害者からの通報で発覚した。",
                    "警察が詳しい動機を調べている。", "近くの住民が異変に気付き、110番した。", "現場は駅に近い住宅街。"]
ROAD_SCENES = ["現場は片側1車線の見通しの良い直線道路。", "現場は信号機のある交差点。", "現場は緩やかなカーブ。",
               "現場付近は一時、通行止めとなった。"]
DOCUMENTS = "要望書 嘆願書 請願書 意見書 陳情書 申し入れ書".split()
STATEMENTS = "共同声明 声明文 緊急声明".split()
DEMANDS = ["保育所の増設", "通学路への信号機の設置", "路線バスの存続", "地域病院の存続", "公園の再整備", "小学校統合計画の見直し",
           "踏切の改良", "図書館の開館時間の延長", "ごみ処理施設の建設中止", "被告への厳しい処罰", "商店街の街灯の増設",
           "高齢者向け巡回バスの運行"]
COMPANY_HEADS = "東洋 日本 大和 中央 北斗 新光 丸山 三和 富士 旭 明和 昭栄 東邦 瑞穂 太平 光洋 大成 共栄".split()
COMPANY_TAILS = "製作所 電機 食品 建設 物産 化学 工業 薬品 ホールディングス 商事 運輸 精機 電子 酒造 不動産".split()
PRODUCTS = ["新型の家庭用蓄電池", "地元産の米を使った菓子", "高齢者向けの見守りサービス", "電気自動車向けの部品",
            "省エネ型の業務用冷蔵庫", "新しいスマートフォン向けアプリ", "国産小麦のパン", "再生プラスチック製の容器"]
POLICIES = ["子どもの医療費を高校卒業まで無料にする方針", "市内全域でのごみ袋の有料化", "新たな防災計画",
            "中学校給食の無償化", "駅前再開発の基本計画", "観光客向けの宿泊税の導入", "公共施設の使用料の見直し",
            "不登校の子どもの居場所づくり事業"]
AWARD_REASONS = ["川で溺れていた男児を救助した", "火災に気付いて住民を避難させた", "特殊詐欺の被害を未然に防いだ",
                 "倒れた男性に心臓マッサージをして命を救った", "長年にわたり通学路の見守りを続けた"]
AWARDS = ["県文化賞", "市民栄誉賞", "地域づくり功労賞", "全国発明表彰の奨励賞", "日本建築学会賞"]
WEATHER = ["晴れ", "曇り", "雨", "曇り時々雨", "晴れ時々曇り", "雪"]
EVENTS = ["秋祭り", "花火大会", "朝市", "ひな人形展", "菊花展", "ランタン祭り", "マラソン大会", "陶器市", "紅葉まつり",
          "古本市", "ジャズフェスティバル", "収穫祭"]
VENUES = ["中央公園", "市民会館", "駅前広場", "運動公園", "市民体育館", "市立美術館", "城址公園", "河川敷"]
TEAMS = ["巨人", "阪神", "中日", "広島", "ヤクルト", "DeNA", "ソフトバンク", "日本ハム", "ロッテ", "楽天", "西武", "オリックス"]
J_TEAMS = ["鹿島", "浦和", "川崎", "横浜M", "G大阪", "C大阪", "名古屋", "広島", "神戸", "札幌", "FC東京", "福岡"]
SCHOOLS = "北 南 東 西 中央 第一 商業 工業 学院 実業".split()
ROLES = ["市長", "知事", "同社の社長", "県警の幹部", "担当の課長", "校長", "組合の委員長", "病院の院長", "町長", "同社の広報担当者"]


class Writer:
    """Draws the parts of articles from one seeded random generator."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def pick(self, seq):
        return self.rng.choice(seq)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # ------------------------------------------------------------ parts
    def day(self, hours: bool = True) -> str:
        d = self.rng.randint(1, 28)
        if not hours:
            return self.pick([f"{d}日", f"{d}日", f"{d}日午前", f"{d}日午後"])
        return self.pick([f"{d}日", f"{d}日午前", f"{d}日午後", f"{d}日夜", f"{d}日朝",
                          f"{d}日午前{self.rng.randint(1, 11)}時ごろ", f"{d}日午後{self.rng.randint(1, 11)}時すぎ"])

    def past_day(self) -> str:
        return self.pick([f"今月{self.rng.randint(1, 28)}日", f"先月{self.rng.randint(1, 28)}日",
                          f"{self.rng.randint(1, 12)}月{self.rng.randint(1, 28)}日"])

    def pref(self) -> str:
        return self.pick(list(PLACES))

    def city(self, pref: str) -> str:
        cities = [c for c in PLACES[pref] if c]
        return self.pick(cities) if cities else self.pick(PLACES[pref][""])

    def address(self, pref: str | None = None) -> str:
        """A residence at one of several granularities, written the way news copy writes it."""
        pref = pref if pref and self.chance(0.7) else self.pref()
        city = self.pick(list(PLACES[pref]))
        wards = PLACES[pref][city]
        level = self.rng.random()
        if level < 0.12:
            return pref
        if not city:  # a Tokyo ward
            base = pref + self.pick(wards)
        elif city in DESIGNATED:
            base = city + (self.pick(wards) if wards and level < 0.75 else "")
        else:
            base = (pref if level < 0.6 else "") + city
        if level > 0.8:
            base += f"{self.pick(TOWNS)}{self.rng.randint(1, 5)}丁目"
        return base

    def place(self, pref: str | None = None) -> str:
        """Where something happened: never a person's address."""
        pref = pref if pref and self.chance(0.8) else self.pref()
        city = self.city(pref)
        return city + self.pick(["", f"{self.pick(TOWNS)}{self.rng.randint(1, 5)}丁目", "内", "の駅前", "の繁華街"])

    def police(self, pref: str) -> str:
        if pref == "東京都":
            return self.pick(["警視庁", "警視庁捜査2課", f"警視庁{self.pick(['新宿', '練馬', '大田', '町田'])}署"])
        station = self.city(pref).removesuffix("市")
        return self.pick([f"{pref}警", f"{pref}警捜査1課", f"{pref}警生活安全課", f"{pref}警{station}署"])

    def deed(self, charge: str, pref: str | None = None) -> str:
        return self.pick(CHARGES[charge]).format(place=self.place(pref), n=self.number(2, 12), yen=self.number(2, 90) * 1000,
                                                 man=self.number(3, 900), age2=self.number(20, 90))

    def company(self) -> str:
        return self.pick(COMPANY_HEADS) + self.pick(COMPANY_TAILS)

    def number(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    # ------------------------------------------------------------ people
    def person(self, student_ok: bool = True, foreign_ok: bool = True) -> dict[str, Any]:
        """A named person: full name as written, the short form for a second mention, age, job."""
        r = self.rng.random() * (1.0 if foreign_ok else 0.8)
        nationality = None
        if r < 0.68:
            family, full = japanese_name(self.rng)
        elif r < 0.8:
            family, full = japanese_name(self.rng, kana_given=True)
        else:
            nationality = self.pick(list(FOREIGN))
            families, givens, order = FOREIGN[nationality]
            family, given = self.pick(families), self.pick(givens)
            full = {"family_first": f"{family}・{given}", "given_first": f"{given}・{family}",
                    "kanji": family + given}[order]
        age = self.number(19, 84)
        job = self.pick(OCCUPATIONS)
        if student_ok and age < 25 and self.chance(0.5):
            job = self.pick(STUDENTS)
        if nationality and self.chance(0.5):
            job = self.pick(["技能実習生", "留学生", "会社員", "無職", "飲食店員"])
        return {"name": full, "short": family, "age": age, "job": job, "nationality": nationality}

    def introduce(self, p: dict[str, Any], suffix: str, pref: str | None = None,
                  with_address: float = 0.75) -> tuple[str, str | None]:
        """「横浜市中区の会社員、山田太郎容疑者（45）」 and its address (None when the text gives none)."""
        name_age = f"{p['name']}{suffix}（{p['age']}）"
        if p["nationality"] and self.chance(0.6):
            if self.chance(0.4):
                address = self.address(pref)
                return f"{address}に住む{p['nationality']}の{p['job']}、{name_age}", address
            return f"{p['nationality']}の{p['job']}、{name_age}", None
        if not self.chance(with_address):
            if suffix == "容疑者" and self.chance(0.3):
                return f"住所不定、無職の{name_age}", None
            return self.pick([f"{p['job']}の{name_age}", f"{p['job']}、{name_age}"]), None
        address = self.address(pref)
        form = self.rng.random()
        if form < 0.6:
            return f"{address}の{p['job']}、{name_age}", address
        if form < 0.85:
            return f"{address}に住む{p['job']}の{name_age}", address
        return f"{address}在住の{p['job']}、{name_age}", address


def label(p: dict[str, Any], act: str, address: str | None, signature: str | None = None) -> dict[str, Any]:
    return {"name": p["name"], "act": act, "address": address, "signature": signature}


def join_names(intros: list[str]) -> str:
    return intros[0] if len(intros) == 1 else "、".join(intros[:-1]) + "と" + intros[-1]


# ---------------------------------------------------------------- positive stories
def story_arrest(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    police = w.police(pref)
    charge = w.pick(list(CHARGES))
    people = [w.person() for _ in range(1 if w.chance(0.75) else 2)]
    intros, persons = [], []
    for p in people:
        intro, address = w.introduce(p, "容疑者", pref)
        intros.append(intro)
        persons.append(label(p, "逮捕", address))
    who = join_names(intros) + ("の2人" if len(people) == 2 else "")
    when = w.day()
    lead = w.pick([
        f"{police}は{when}、{charge}の疑いで、{who}を逮捕した。",
        f"{when}、{who}が{charge}の疑いで{police}に逮捕された。",
        f"{charge}の疑いで、{police}は{when}、{who}を逮捕したと発表した。",
        f"{police}は{when}、{who}を{charge}の疑いで逮捕した。",
        f"{charge}の疑いで{who}が{when}、逮捕された。{police}が発表した。",
    ])
    s = people[0]["short"]
    extras = [
        w.pick([f"逮捕容疑は{w.past_day()}、{w.deed(charge, pref)}疑い。",
                f"{s}容疑者は{w.past_day()}、{w.deed(charge, pref)}疑いが持たれている。"]),
        w.pick([f"調べに対し「{w.pick(QUOTES_ADMIT)}」と容疑を認めている。",
                f"調べに対し「{w.pick(QUOTES_DENY)}」と容疑を否認している。",
                f"{s}容疑者は「{w.pick(QUOTES_DENY)}」と話しているという。"]),
        w.pick(FOLLOW_UPS_CRIME),
    ]
    return lead, extras, persons


def story_indict(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    office = CITY_OF_COURT[pref] + "地検"
    charge = w.pick(list(CHARGES))
    p = w.person()
    when = w.day(hours=False)
    if w.chance(0.7):
        act = "起訴"
        intro, address = w.introduce(p, w.pick(["被告", "容疑者"]), pref)
        lead = w.pick([f"{office}は{when}、{intro}を{charge}の罪で起訴した。",
                       f"{charge}の罪で、{intro}が{when}、{office}に起訴された。",
                       f"{office}は{when}、{charge}の罪で{intro}を起訴した。"])
        extras = [w.pick([f"{office}は認否を明らかにしていない。", f"{p['short']}被告は起訴内容を認めているという。"]),
                  f"起訴状によると、{p['short']}被告は{w.past_day()}、{w.deed(charge, pref)}とされる。"]
    else:
        act = "書類送検"
        police = w.police(pref)
        intro, address = w.introduce(p, w.pick(["さん", "容疑者"]), pref)
        lead = w.pick([f"{police}は{when}、{intro}を{charge}の疑いで書類送検した。",
                       f"{charge}の疑いで、{intro}が{when}、{police}に書類送検された。"])
        extras = [f"送検容疑は{w.past_day()}、{w.deed(charge, pref)}疑い。", "容疑を認めているという。"]
    extras.append(w.pick(FOLLOW_UPS_CRIME))
    return lead, extras, [label(p, act, address)]


def story_court(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    court = CITY_OF_COURT[pref] + w.pick(["地裁", "地裁", "高裁", "地裁支部"])
    charge = w.pick(list(CHARGES))
    p = w.person()
    intro, address = w.introduce(p, "被告", pref)
    years = w.number(1, 8)
    sentence = w.pick([f"懲役{years}年（求刑懲役{years + w.number(1, 3)}年）", f"懲役{years}年、執行猶予{w.number(3, 5)}年",
                       "無罪", f"罰金{w.number(20, 100)}万円"])
    when = w.day(hours=False)
    lead = w.pick([f"{charge}の罪に問われた{intro}の判決で、{court}は{when}、{sentence}を言い渡した。",
                   f"{court}は{when}、{charge}の罪に問われた{intro}に{sentence}の判決を言い渡した。",
                   f"{charge}の罪に問われた{intro}に対し、{court}は{when}、{sentence}の判決を言い渡した。"])
    extras = [w.pick(["裁判長は「動機に酌量の余地はない」と述べた。", "裁判長は「被害者の処罰感情は厳しい」と指摘した。",
                      "裁判長は「反省の態度が見られる」と述べた。"]),
              w.pick(["弁護側は控訴を検討している。", "検察側は判決を不服として控訴する方針。"]),
              f"判決によると、{p['short']}被告は{w.past_day()}、{w.deed(charge, pref)}。"]
    return lead, extras, [label(p, "判決", address)]


def story_accident(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    city = w.city(pref)
    road = w.pick([f"{city}の国道{w.number(1, 499)}号", f"{city}の県道", f"{city}の交差点", f"{city}の市道"])
    vehicle = w.pick(["乗用車", "軽乗用車", "オートバイ", "ワゴン車"])
    other = w.pick(["トラック", "大型トラック", "路線バス", "乗用車"])
    people = [w.person() for _ in range(1 if w.chance(0.7) else 2)]
    intro, address = w.introduce(people[0], "さん", pref)
    persons = [label(people[0], "死亡", address)]
    lead = w.pick([f"{w.day()}、{road}で{vehicle}と{other}が衝突し、{vehicle}を運転していた{intro}が死亡した。",
                   f"{road}で{w.day()}、{vehicle}が{other}と衝突する事故があり、{vehicle}を運転していた{intro}が死亡した。"])
    extras = [f"{w.police(pref)}が事故の原因を調べている。", w.pick(ROAD_SCENES)]
    if len(people) == 2:
        intro2, address2 = w.introduce(people[1], "さん", pref)
        extras.insert(0, f"同乗していた{intro2}も重傷を負った。")
        persons.append(label(people[1], "重傷", address2))
    else:
        extras.append(f"{other}の運転手にけがはなかった。")
    return lead, extras, persons


def story_award(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    p = w.person()
    intro, address = w.introduce(p, "さん", pref)
    when = w.day(hours=False)
    if w.chance(0.6):
        giver = w.pick([f"{w.police(pref)}", f"{w.city(pref)}消防局", f"{w.city(pref)}"])
        reason = w.pick(AWARD_REASONS)
        lead = w.pick([f"{giver}は{when}、{reason}として、{intro}を表彰した。",
                       f"{reason}として、{intro}が{when}、{giver}から表彰された。"])
        extras = [f"{p['short']}さんは「{w.pick(['当然のことをしただけ', '無我夢中だった', '体が自然に動いた'])}」と話した。",
                  "感謝状が贈られた。", f"{w.past_day()}の出来事だった。"]
        return lead, extras, [label(p, "表彰", address)]
    award = w.pick(AWARDS)
    lead = w.pick([f"{intro}が{award}を受賞し、{when}、{w.city(pref)}で贈呈式があった。",
                   f"今年の{award}に{intro}が選ばれ、{when}、受賞が発表された。"])
    extras = [f"{p['short']}さんは「支えてくれた皆さんのおかげ」と喜んだ。", f"賞は{w.number(1970, 2015)}年に創設された。"]
    return lead, extras, [label(p, "受賞", address)]


def story_company(w: Writer) -> tuple[str, list[str], list[dict]]:
    company = w.company()
    a, b = w.person(student_ok=False), w.person(student_ok=False, foreign_ok=False)
    a["age"], b["age"] = w.number(52, 78), w.number(45, 66)
    when = w.day(hours=False)
    kind = w.rng.random()
    if kind < 0.4:
        title = w.pick(["専務", "常務", "取締役", "副社長"])
        lead = f"{company}は{when}、{b['name']}{title}（{b['age']}）が{w.number(1, 12)}月1日付で社長に就任する人事を発表した。"
        persons = [label(b, "就任", None)]
        extras = [w.pick(["業績の立て直しを進める。", "若返りを図る。", "海外事業の拡大を急ぐ。"]),
                  f"同社は{w.number(1920, 1990)}年創業。", f"{w.number(2, 12)}月の株主総会を経て正式に決まる。"]
        if w.chance(0.6):
            extras.insert(0, f"{a['name']}社長（{a['age']}）は退任し、会長に就く。")
            persons.append(label(a, "退任", None))
        return lead, extras, persons
    if kind < 0.75:
        lead = w.pick([f"{company}の{a['name']}社長は{when}、記者会見を開き、{w.pick(PRODUCTS)}を発表した。",
                       f"{company}社長の{a['name']}氏は{when}、{w.pick(PRODUCTS)}を売り出すと発表した。"])
        extras = [f"{a['short']}社長は「{w.pick(['若い世代に届けたい', '海外にも広げたい', '地域に貢献したい'])}」と述べた。",
                  f"年間{w.number(2, 90)}億円の売り上げを目指す。", f"{w.number(1, 12)}月から全国で販売する。"]
        return lead, extras, [label(a, "発表", None)]
    lead = f"{company}の{a['name']}社長（{a['age']}）が{when}、{w.pick(['業績悪化の責任を取って', '一身上の都合で', '不正会計問題を受けて'])}辞任した。"
    extras = ["後任は未定。", "同社は再発防止策をまとめる方針。", f"{a['short']}氏は{w.number(2005, 2022)}年から社長を務めていた。"]
    return lead, extras, [label(a, "辞任", None)]


def story_municipal(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    city = w.city(pref)
    a, b = w.person(student_ok=False, foreign_ok=False), w.person(student_ok=False, foreign_ok=False)
    a["age"], b["age"] = w.number(40, 75), w.number(35, 75)
    when = w.day(hours=False)
    if w.chance(0.55):
        lead = w.pick([f"{a['name']}・{city}長は{when}の定例会見で、{w.pick(POLICIES)}を発表した。",
                       f"{city}長の{a['name']}氏は{when}、{w.pick(POLICIES)}を発表した。"])
        extras = ["来年度から実施する。", f"{a['short']}市長は「市民の声に応えたい」と述べた。",
                  f"関連経費約{w.number(2, 90)}億円を補正予算案に盛り込む。"]
        return lead, extras, [label(a, "発表", None)]
    lead = f"{w.past_day()}投開票の{city}長選で、無所属新人の{a['name']}氏（{a['age']}）が初当選した。"
    persons = [label(a, "当選", None)]
    extras = [f"投票率は{w.number(25, 60)}.{w.number(0, 9)}％だった。", f"{a['short']}氏は「公約の実現に全力を尽くす」と語った。"]
    if w.chance(0.6):
        extras.insert(0, f"現職の{b['name']}氏（{b['age']}）は落選した。")
        persons.append(label(b, "落選", None))
    return lead, extras, persons


def story_petition(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    city = w.city(pref)
    people = [w.person() for _ in range(w.pick([1, 1, 2, 3]))]
    when = w.day(hours=False)
    demand = w.pick(DEMANDS)
    if w.chance(0.6):
        doc = w.pick(DOCUMENTS)
        intros, persons = [], []
        for p in people[:2]:
            intro, address = w.introduce(p, "さん", pref)
            intros.append(intro)
            persons.append(label(p, "提出", address, doc))
        recipient = w.pick([f"{city}長", f"{city}議会", f"{pref}知事", f"{pref}教育委員会"])
        lead = w.pick([f"{join_names(intros)}らは{when}、{demand}を求める{doc}を{recipient}に提出した。",
                       f"{demand}を求め、{join_names(intros)}らが{when}、{recipient}に{doc}を提出した。"])
        extras = [f"{doc}には約{w.number(3, 90) * 100}人分の署名が添えられた。",
                  f"{people[0]['short']}さんは「{w.pick(['子どもたちの安全を守りたい', '地域の声を届けたい', '早く実現してほしい'])}」と話した。"]
        return lead, extras, persons
    doc = w.pick(STATEMENTS)
    profession = w.pick(["弁護士", "大学教授", "医師", "作家", "元裁判官"])
    names = "、".join(f"{p['name']}氏" for p in people)
    lead = w.pick([f"{profession}の{names}ら{w.number(10, 200)}人が{when}、{demand}を求める{doc}に署名し、公表した。",
                   f"{demand}を求める{doc}に、{profession}の{names}らが署名し、{when}、{city}で会見した。"])
    extras = [f"{doc}は{pref}などに送付された。", "賛同者は今後も募る。"]
    return lead, extras, [label(p, "署名", None, doc) for p in people]


# ---------------------------------------------------------------- empty stories (no person named)
def story_weather(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    region = w.pick([pref, f"{pref}内", "関東地方", "近畿地方", "九州北部", "東北地方", "北陸地方"])
    cause, weather = w.pick([("高気圧に覆われ", "晴れ"), ("前線の影響で", "雨"), ("寒気が流れ込み", "雪"),
                             ("湿った空気の影響で", "曇り時々雨"), ("低気圧が近づき", "雨")])
    lead = w.pick([f"気象庁によると、{w.day(hours=False)}の{region}は{w.pick(WEATHER)}となる見込み。",
                   f"{region}は{w.day(hours=False)}、{cause}、{weather}となった。",
                   f"{w.day(hours=False)}の{region}は{cause}、各地で{weather}となった。"])
    extras = [f"{w.city(pref)}の最高気温は{w.number(-2, 37)}度の予想。",
              w.pick(["熱中症に注意が必要だ。", "朝晩は冷え込むため、体調管理に気をつけたい。", "大雨による土砂災害に警戒が必要だ。"]),
              f"降水確率は{w.number(0, 10) * 10}％。", f"{w.city(pref)}では{w.number(2, 60)}ミリの雨が降った。",
              "週末にかけて天気は回復に向かう見通し。"]
    return lead, extras, []


def story_sports(w: Writer) -> tuple[str, list[str], list[dict]]:
    if w.chance(0.45):
        a, b = w.rng.sample(TEAMS, 2)
        y = w.number(0, 3)
        x = y + w.number(1, 6)
        lead = w.pick([f"プロ野球は{w.day(hours=False)}、{a}が{b}に{x}－{y}で勝ち、{w.number(2, 6)}連勝とした。",
                       f"{a}は{w.day(hours=False)}、{b}と対戦し、{x}－{y}で勝った。"])
        extras = [f"{a}は{w.number(2, 8)}回に打線がつながり、一挙{w.number(2, 5)}点を挙げた。", f"{b}は{w.number(2, 7)}連敗。",
                  "先発投手が7回を無失点に抑えた。", f"観客は{w.number(12, 45)}000人だった。"]
    elif w.chance(0.5):
        a, b = w.rng.sample(J_TEAMS, 2)
        y = w.number(0, 2)
        lead = f"サッカーJ1は{w.number(1, 28)}日、各地で{w.number(3, 9)}試合が行われ、{a}が{b}を{y + w.number(1, 3)}－{y}で破った。"
        extras = [f"{a}は勝ち点を{w.number(20, 70)}に伸ばした。", "前半に先制し、後半に追加点を奪った。",
                  f"{b}は{w.number(2, 6)}試合ぶりの黒星。", "次節は来週末に行われる。"]
    else:
        pref = w.pref()
        stem = w.city(pref).removesuffix("市")
        s1, s2 = w.rng.sample([stem + s for s in SCHOOLS], 2)
        lead = f"全国高校{w.pick(['駅伝', 'ラグビー', 'バスケットボール', 'サッカー'])}の{pref}予選決勝が{w.day(hours=False)}行われ、{s1}が{s2}を破り、{w.number(2, 30)}年ぶりの優勝を果たした。"
        extras = ["全国大会は12月に開かれる。", "会場には多くの応援が駆けつけた。", "試合は終盤までもつれる接戦となった。",
                  f"{s1}は前回大会で{w.pick(['準優勝', '初戦敗退', 'ベスト4'])}だった。"]
    return lead, extras, []


def story_market(w: Writer) -> tuple[str, list[str], list[dict]]:
    up = w.chance(0.5)
    when = w.day(hours=False)
    lead = w.pick([
        f"{when}の東京株式市場で日経平均株価は{'反発' if up else '反落'}し、終値は前日比{w.number(20, 800)}円{'高' if up else '安'}の{w.number(30000, 42000)}円だった。",
        f"{when}の外国為替市場で円相場は1ドル＝{w.number(135, 158)}円台で推移した。",
        f"{w.pick(['東京商品取引所', '大阪取引所'])}で{when}、{w.pick(['金', '原油', 'ゴム', 'とうもろこし'])}の先物が{'上昇' if up else '下落'}した。",
        f"{when}の東京外国為替市場では、{'円安' if up else '円高'}が進んだ。"])
    extras = [w.pick(["米国の金利動向を見極めたいとの雰囲気が広がった。", "半導体関連株に買いが入った。", "利益確定の売りが出た。"]),
              f"東証プライム市場の売買代金は約{w.number(2, 6)}兆円。",
              w.pick(["市場関係者は「当面は一進一退が続く」とみている。", "輸出関連株が相場を支えた。", "商いは低調だった。"]),
              f"値上がり銘柄数は{w.number(200, 1500)}だった。"]
    return lead, extras, []


def story_event(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    city = w.city(pref)
    event = w.pick(EVENTS)
    lead = w.pick([f"{city}の{w.pick(VENUES)}で{w.day(hours=False)}、{event}が開かれ、約{w.number(2, 90) * 100}人の来場者でにぎわった。",
                   f"恒例の{event}が{w.day(hours=False)}、{city}の{w.pick(VENUES)}で始まった。",
                   f"{city}で{w.day(hours=False)}、{w.number(2, 60)}回目となる{event}があった。"])
    extras = [f"{w.pick(['地元の商店', '市民団体', '高校生', '実行委員会'])}などが企画し、{w.pick(['屋台が並んだ', '子ども向けの催しもあった', '家族連れが楽しんだ'])}。",
              w.pick(["今月末まで開かれる。", f"{w.number(2, 10)}日間の日程で開かれる。", "雨天の場合は翌日に順延する。"]), "入場は無料。", f"昨年は約{w.number(2, 90) * 100}人が訪れた。",
              w.pick(["会場周辺では交通規制が行われた。", "天候にも恵まれた。"])]
    return lead, extras, []


def story_anonymous_crime(w: Writer) -> tuple[str, list[str], list[dict]]:
    """Hard empty: an arrest or a ruling whose people stay unnamed."""
    pref = w.pref()
    police = w.police(pref)
    charge = w.pick(list(CHARGES))
    who = w.pick([f"{w.address(pref)}に住む{w.number(2, 8)}0代の男", f"{w.address(pref)}の{w.pick(OCCUPATIONS)}の男（{w.number(20, 80)}）",
                  f"{w.pick(OCCUPATIONS)}の女（{w.number(20, 80)}）", f"{w.address(pref)}の少年（{w.number(15, 19)}）",
                  f"自称{w.pick(OCCUPATIONS)}の男（{w.number(20, 80)}）", f"{w.address(pref)}の{w.number(2, 8)}0代の女"])
    when = w.day()
    if w.chance(0.75):
        lead = w.pick([f"{police}は{when}、{charge}の疑いで{who}を逮捕した。",
                       f"{when}、{who}が{charge}の疑いで{police}に逮捕された。",
                       f"{police}は{when}、{who}を{charge}の疑いで書類送検した。"])
        extras = [w.pick(["調べに対し容疑を認めている。", "調べに対し「覚えていない」と否認している。"]),
                  f"{w.past_day()}、{w.deed(charge, pref)}疑いが持たれている。",
                  w.pick(["警察は氏名を明らかにしていない。", "同様の被害が相次いでおり、関連を調べている。",
                          "市内では今年に入って同種の事件が相次いでいる。"])]
    else:
        lead = (f"{CITY_OF_COURT[pref]}地裁は{w.day(hours=False)}、{charge}の罪に問われた{who}に"
                f"懲役{w.number(1, 6)}年の判決を言い渡した。")
        extras = [w.pick(["裁判長は「悪質だ」と述べた。", "裁判長は「再犯の恐れがある」と指摘した。"]),
                  f"判決によると、{w.past_day()}、{w.deed(charge, pref)}。", "弁護側は控訴する方針。"]
    extras.append(w.pick(FOLLOW_UPS_CRIME))
    return lead, extras, []


def story_anonymous_accident(w: Writer) -> tuple[str, list[str], list[dict]]:
    pref = w.pref()
    police = w.police(pref)
    kind = w.rng.random()
    if kind < 0.5:
        lead = w.pick([f"{w.day()}、{w.city(pref)}の国道で乗用車とトラックが衝突し、乗用車の男性が死亡した。",
                       f"{w.day()}、{w.city(pref)}の交差点で、横断歩道を渡っていた{w.number(2, 8)}0代の男性が乗用車にはねられ、重傷を負った。"])
        extras = [w.pick(ROAD_SCENES), f"{police}が事故の原因を調べている。", "乗用車の運転手にけがはなかった。"]
    elif kind < 0.75:
        lead = f"{w.day()}、{w.place(pref)}の住宅から出火し、木造2階建てが全焼した。焼け跡から1人の遺体が見つかった。"
        extras = [f"{police}が身元の確認を急いでいる。", "消防によると、ほかにけが人はいない。", "住人の高齢男性と連絡が取れていない。"]
    else:
        lead = f"{w.day()}、{w.city(pref)}の海岸で、{w.number(2, 8)}0代くらいの女性が倒れているのが見つかった。"
        extras = [f"{police}が身元の確認を急いでいる。", "目立った外傷はないという。", "散歩中の人が見つけて通報した。"]
    extras.append("警察が当時の状況を詳しく調べている。")
    return lead, extras, []


def story_organisation(w: Writer) -> tuple[str, list[str], list[dict]]:
    """Hard empty: companies, cities, unions and roles act, but no person is named."""
    pref = w.pref()
    city = w.city(pref)
    role = w.pick(ROLES)
    when = w.day(hours=False)
    lead = w.pick([
        f"{w.company()}は{when}、{w.pick(PRODUCTS)}を{w.number(1, 12)}月から売り出すと発表した。",
        f"{city}は{when}、{w.pick(POLICIES)}を発表した。",
        f"{city}の{role}は{when}の記者会見で、{w.pick(POLICIES)}を明らかにした。",
        f"{w.pick(['市民団体', '住民の会', '商店会', 'PTA連合会'])}は{when}、{w.pick(DEMANDS)}を求める約{w.number(3, 90) * 100}人分の署名を{city}長に提出した。",
        f"{w.pick(['住民団体', '弁護士会', '労働組合'])}は{when}、{w.pick(DEMANDS)}を求める{w.pick(DOCUMENTS + STATEMENTS)}を{pref}知事に提出した。",
        f"{pref}教育委員会は{when}、{w.pick(['体罰', '不適切な指導', '酒気帯び運転'])}をしたとして、{city}内の中学校の男性教諭（{w.number(25, 60)}）を懲戒処分にした。",
        f"{w.company()}の{w.pick(['社長', '会長', '広報担当者'])}は{when}、{w.pick(['工場の新設', '賃上げ', '海外への進出'])}について「前向きに検討する」と述べた。",
        f"{w.company()}は{when}、社長が{w.number(1, 12)}月末で退任し、後任に副社長が就任する人事を発表した。"])
    extras = [w.pick([f"{role}は「丁寧に説明していきたい」と話した。", "詳しい内容は来月公表する。", "同社の担当者は「再発防止に努める」とコメントした。"]),
              w.pick(["関係者によると、調整は年内にまとまる見通し。", "議会の同意を経て正式に決まる。"]),
              w.pick([f"対象は約{w.number(2, 90) * 100}世帯。", "県内では初めての取り組みとなる。", "今後、説明会を開く予定だ。"]),
              w.pick(["市民からは賛否の声が上がっている。", f"事業費は約{w.number(2, 90)}億円を見込む。",
                      "同様の取り組みは全国で広がっている。"])]
    return lead, extras, []


# Hard empties (the last three) are ~48% of empties: a probe with ~35% raised the false-positive rate from
# 1-4% to 20-62% after 96 training examples (docs/corpus.md, "Learnability probe").
EMPTY_STORIES = [(story_weather, 3), (story_sports, 3), (story_market, 2), (story_event, 3),
                 (story_anonymous_crime, 4), (story_anonymous_accident, 2), (story_organisation, 4)]


def credit(w: Writer, named: bool) -> tuple[str, dict | None]:
    """The reporter's or photographer's credit: a person when named, an agency or desk when not."""
    if not named:
        return w.pick(["（共同）", "（時事）", "（本社取材班）", "＝本社ヘリから", "（地方部）"]), None
    p = w.person(student_ok=False)
    if w.chance(0.5):
        return f"（取材・{p['name']}）", label(p, "取材", None)
    return f"＝{w.place()}で、{p['name']}撮影", label(p, "撮影", None)


def story_credited(w: Writer) -> tuple[str, list[str], list[dict]]:
    """An article about no one, made positive by its named reporter or photographer."""
    lead, extras, _ = weighted(w, EMPTY_STORIES)(w)
    text, person = credit(w, named=True)
    return lead, extras, [person | {"_credit": text}]


POSITIVE_STORIES = [(story_arrest, 4), (story_indict, 2), (story_court, 2), (story_accident, 2), (story_award, 2),
                    (story_company, 2), (story_municipal, 2), (story_petition, 2), (story_credited, 1)]


def compose(w: Writer, story, target: int, max_chars: int) -> tuple[str, list[dict]]:
    """Lead sentence, then the story's other sentences in random order until the target length."""
    lead, extras, persons = story(w)
    ending = ""
    for p in persons:
        ending = p.pop("_credit", ending)
    if not ending and w.chance(0.15) and len(persons) < 3:
        ending, person = credit(w, named=bool(persons) and w.chance(0.5))
        persons += [person] if person else []
    target -= len(ending)
    w.rng.shuffle(extras)
    text = lead
    for sentence in extras:
        if len(text) >= target or len(text) + len(sentence) + len(ending) > max_chars:
            break
        text += sentence
    text += ending
    # a person whose sentence did not make it into the article is not in it
    return text, [p for p in persons if p["name"] in text]


def weighted(w: Writer, stories):
    return w.rng.choices([s for s, _ in stories], weights=[k for _, k in stories])[0]


def background(w: Writer, room: int) -> str:
    """A paragraph of news background that names no relevant person (sentences of the empty stories), at most
    `room` characters: what makes a long article long, around the story that carries the label."""
    text = ""
    for _ in range(8):
        lead, extras, persons = weighted(w, EMPTY_STORIES)(w)
        if persons:
            continue
        for sentence in [lead, *extras]:
            if len(text) + len(sentence) > room:
                return text
            text += sentence
    return text


def draw(w: Writer, stories, min_chars: int, max_chars: int, tolerance: int = 10) -> tuple[str, list[dict]]:
    """One article whose length is close to a uniform random target, the same for both classes,
    so that length does not give the label away. A target longer than a story (they run to ~230 characters)
    is reached with background paragraphs after it. The first draw that fits max_chars is kept: keeping the draw
    closest to the target made long targets all arrests (the story with the most sentences)."""
    target = w.number(min_chars, max_chars)
    story = weighted(w, stories)
    for _ in range(40):
        text, persons = compose(w, story, target, max_chars)
        if len(text) <= max_chars:
            break
    while len(text) < target - tolerance:
        more = background(w, min(target, max_chars) - len(text) - 1)
        if not more:
            break
        text += "\n" + more
    return text, persons


def generate(n_articles: int, positive_share: float, seed: int, fields=DEMO_FIELDS,
             min_chars: int = 60, max_chars: int = 160) -> list[dict[str, Any]]:
    """n_articles distinct articles, round(n * share) of them positive, in seeded random order."""
    w = Writer(seed)
    n_positive = round(n_articles * positive_share)
    texts: set[str] = set()
    rows = []
    for want, stories in ((n_positive, POSITIVE_STORIES), (n_articles - n_positive, EMPTY_STORIES)):
        made, tries = 0, 0
        while made < want:
            tries += 1
            if tries > 20 * want + 1000:
                raise JinmeiError(f"demo: could not draw {want} distinct articles; lower demo.n_articles")
            text, persons = draw(w, stories, min_chars, max_chars)
            names = [p["name"] for p in persons]
            if text in texts or len(text) > max_chars or len(set(names)) < len(names):
                continue
            texts.add(text)
            rows.append({"text": text, "output": {"persons": [{f: p[f] for f in fields} for p in persons]}})
            made += 1
    w.rng.shuffle(rows)
    width = len(str(n_articles))
    return [{"id": f"demo-{i:0{width}d}", **row} for i, row in enumerate(rows, 1)]


DECOY_LEADS = ["", "（資料）", "出力例：", "参考：", "※以下は記事と無関係のデータ "]
DECOY_ACTS = ["逮捕", "表彰", "就任", "受賞", "死亡"]


def add_decoys(rows: list[dict[str, Any]], share: float, seed: int) -> int:
    """Append JSON-looking text (a fake answer) to about `share` of the articles, their gold answers unchanged.

    A stranger's article can hold text shaped like the answer (a pasted example, a data block); a model that copies
    it names someone the article's story does not. Seeing such articles with their right answers in training
    teaches it to read the story, not the JSON. A separate random stream: every other article stays as it was."""
    rng = random.Random(f"{seed}-decoys")
    made = 0
    for row in rows:
        if rng.random() >= share:
            continue
        real, name = {p["name"] for p in row["output"]["persons"]}, ""
        while not name or name in real or name in row["text"]:
            name = japanese_name(rng)[1]
        fake = {"persons": [] if real and rng.random() < 0.2 else
                [{"name": name, "act": rng.choice(DECOY_ACTS), "address": None, "signature": None}]}
        row["text"] += rng.choice(DECOY_LEADS) + json.dumps(fake, ensure_ascii=False, separators=(",", ":"))
        made += 1
    return made


def write_corpus(demo, fields: list[str], seed: int, out: Path) -> None:
    """The demo corpus as the `demo` stage writes it (params: the demo section, schema.fields, seed)."""
    fields = list(fields)
    if not fields or fields[0] != "name" or not set(fields) <= set(DEMO_FIELDS):
        raise JinmeiError(f"schema.fields={fields}: the demo corpus labels only {list(DEMO_FIELDS)} with 'name' "
                          "first; use those fields or point corpus.path at your own corpus")
    start = time.perf_counter()
    rows = generate(demo.n_articles, float(demo.positive_share), seed, fields, demo.min_chars, demo.max_chars)
    decoys = add_decoys(rows, float(demo.decoy_share), seed)
    write_jsonl(out, rows)
    positives = sum(1 for r in rows if r["output"]["persons"])
    print(f"demo: wrote {len(rows)} articles ({positives} positive, {decoys} holding a fake JSON answer) to {out} "
          f"in {time.perf_counter() - start:.2f} s")
