"""How common each character is in Chinese text, in bits (-log2 of its frequency): encoding.py scores candidate
decodings with it (a right decoding is common hanzi; a wrong one is rare hanzi, kana or Latin mojibake).

Built from sample-site text the encoding tests never serve, so they do not grade the table on its own source:
LibreOffice's zh-CN help (1424 pages) and Debian Reference chapters 1, 2 and 9 in zh-CN and zh-TW (the tests use
the other chapters, the FAQ and LilyPond): 557k simplified and 59k traditional characters, lxml text_content()
without <script>/<style>. Each script's text is completed by the other's converted with OpenCC (the zh-TW text
alone knows 1134 characters), and the two get equal weight: p = (p_simplified + p_traditional) / 2. Kept:
non-ASCII ideographs, CJK and full-width forms, punctuation, symbols and spaces with p >= 2^-18.5 (~3
occurrences), 1873 characters, grouped below by rounded cost. Deterministic; rebuild with

    PYTHONPATH=$PWD .venv/bin/python -m stages.crawl.hanzi data/sample-site/root
"""
from __future__ import annotations

MAX_BITS = 18


def _text(paths) -> str:
    import lxml.html

    out = []
    for p in paths:
        doc = lxml.html.fromstring(p.read_bytes())
        for el in doc.xpath("//script | //style"):
            el.drop_tree()
        out.append(doc.text_content())
    return "\n".join(out)


def _probs(text: str) -> dict[str, float]:
    """Frequency of each non-ASCII ideograph, CJK or full-width form, punctuation mark, symbol or space (the
    classes of pipelines.text): letters of other scripts in the source text (Arabic, Hangul examples) are left out."""
    from collections import Counter

    import numpy as np

    from pipelines.text import PUNCT, SPACE, SYMBOL, char_classes, cjk_table, codepoints

    cps = codepoints(text)
    kept = cps[(cps > 0x7F) & (cjk_table()[cps] | np.isin(char_classes(text), [PUNCT, SYMBOL, SPACE]))]
    counts = Counter(kept.tolist())
    return {chr(c): k / len(kept) for c, k in counts.items()}


def build(root) -> dict[int, str]:
    import math
    from pathlib import Path

    import opencc

    root = Path(root)
    ref = root / "usr/share/debian-reference"
    simp = _text(sorted((root / "usr/share/libreoffice/help/zh-CN").rglob("*.html"))
                 + [ref / f"{c}.zh-cn.html" for c in ("ch01", "ch02", "ch09")])
    trad = _text([ref / f"{c}.zh-tw.html" for c in ("ch01", "ch02", "ch09")])
    ps = _probs(simp + opencc.OpenCC("t2s").convert(trad))
    pt = _probs(trad + opencc.OpenCC("s2t").convert(simp))
    p = {c: ps.get(c, 0) / 2 + pt.get(c, 0) / 2 for c in set(ps) | set(pt)}
    table: dict[int, list[str]] = {}
    for c in sorted(p, key=lambda c: (-p[c], c)):
        bits = round(-math.log2(p[c]))
        if bits <= MAX_BITS:
            table.setdefault(bits, []).append(c)
    return {b: "".join(cs) for b, cs in sorted(table.items())}


def _write(table: dict[int, str]) -> None:
    """Rewrite this file's TABLE (everything from its first line down), 50 characters a line."""
    from pathlib import Path

    from pipelines.io import write_bytes

    me = Path(__file__)
    head = me.read_text(encoding="utf-8").split("\nTABLE: ")[0]
    lines = ["", "TABLE: dict[int, str] = {"]
    for bits, chars in table.items():
        parts = [chars[i:i + 50] for i in range(0, len(chars), 50)]
        lines.append(f"    {bits}: " + "\n        ".join(repr(x) for x in parts) + ",")
    write_bytes(me, (head + "\n".join(lines) + "\n}\n").encode("utf-8"))


if __name__ == "__main__":
    import sys

    _write(build(sys.argv[1]))

# bits -> the characters with that cost, most common first; written by _write.
TABLE: dict[int, str] = {
    5: '的。',
    6: '，「」中文用',
    7: '在式格字表一可以入选選件要示数數',
    8: '使定有目或行如和列引框符是置个個令下元本果包命模到对對作索值您此分择擇不插打上工例指面相为助名所',
    9: '段域位自档檔单單爲新标標“图圖”象将將其前按🔎、方改回出点點算加能建录錄更动動系于於据據期返除具法然'
        '主序接函頁页保击擊时時向合輸输大日同后通後修之項项显顯小\xa0程案多性制形部容区區开開器存含度右你了編编'
        '也关關',
    10: '公設设重型号號它些第样樣片（条條被查块塊）版帮幫軟软正并当當間间者題题理应應鍵键最安提成移印体體請请'
        '放需义義窗內内子添整幻語语与與色他計计口來来始这這统会會統落輯辑並線线話话换換类類該该配只管复參参从'
        '從菜全息控左像問问过過量进進信空地卡替源每化已则則直找組组称稱注导導取平意複边邊库庫功次排言年訪访任'
        '基結结代必括操效比',
    11: '由明看透製等创創視视某高集删刪而月密特支码碼默常鼠及确確栏欄轉转变變光隔切距記记限且供外持藏二拖母根'
        '灯燈但映装裝属屬完天都何因率消板展三手詞词架现現箭別别宏脚腳充签好得素節节非生串利級级至启眉解即偏註'
        '鏈链就角填考匹先写寫鈕钮硬另快戶户見见認认端執执章起航围圍預预境超影尾範范…周两兩景矩覽览准準略：',
    12: '止情載载运運齊齐啓状狀址顏颜交筛篩头頭原差活少想誤误心种種籤带帶处护處調護调清布依否曲錯错立背连連演'
        '付服那均路人述仅僅再閉闭縮缩步首们們升音发机機發达達佈双隐隱雙望便允週粘水資资須须繪绘受各我未无無備'
        '备希搜检檢电電环環做照核套描垂扩擴概白併住收軸轴流–料許许底态態里剪增实實盘盤固沒没典殊說说磁稿捷碟'
        '附貼贴零才候务務證证佔占构構致洲百券把还還似求退網网价價普宽寬反告規规界省四旋留台給给互断斷斜終终屏'
        '恢為总束維總维嚮折浏瀏割送順顺缺',
    13: '份够夠幕测測速层層尺忽共批星道事介副画畫試试；侧側权權讀读滑真免細细失追居况況足拟擬若假径徑拉跟避析'
        '停适適簽防旁阵陣較较末金张張币幣挂掛封裏书書余很復桌虚虛餘射拼播旧舊貨货近緣缘係去局長长→弦决決續续'
        '踪蹤’己額额术經经術識识享亮献獲獻获邮郵報报賴赖着传傳嵌技知释釋訊讯乘刷国國跳随隨仍叉纔禁驗验佳储儲'
        '媒登粗简簡哪短覆絕绝聚远遠逻邏初句际際五低商激詳详降頂顶？么独獨造麼黑啟援撤針针响強强響减減积積亚亞'
        '史滤濾圆圓堆警',
    14: '满滿逆采輔辅推混紙纸閱阅十採裡兼廓智議议負负阴陰学學翻循拒槽累冊册声聲拆易美产產精舍志历延摘款浮詢讓'
        '让询伯家巧投簿补補灰英几划劃幾綱纲淡物般譯译础礎誌偶奇寸益跨阿六优優员員联聯弧游突靠吸尽抽滚滾杂雜儘'
        '离臺鑰钥離叫站阶階驟骤慮虑鎖锁待柱迴觀观伸嘗尝倍半往掉树樹耗越身坏壞扇汇破私笔筆微深著压壓归歸旦校歷'
        '盖矢秒繞绕蓋輪轮遇渐漸买味呼朝買陷彙截横橫署驅驱扫掃势勢守蓝藍訂订',
    15: '损損艺藝趋趨—✓什圈姓植渡繼继講讲綁绑递逗遞遵习叠疊習察既頻频汉漢邻鄰刻擦焦科花荐薦寻尋克八司品唯季'
        '尔彩戳爾約紋繁约纹購购車阻伺官感故松泰股西逐錨锚風风估剩力南太探永热熱瞭车障夹夾客拷教欧歐紅红专專絡'
        '络賬账»富怎救牙冲协協諺谚偿償售歧油甚緩缓衝醒险險临檯臨貝贝严嚴尤干异慢政梯父異糊縱纵业帐帳曆杠業槓'
        '‘休施沉稳穩鬆卷坐座萤螢鏡镜千忆急憶沿稍策綴缀老虽辨鐘钟隆雖征徵論论質质',
    16: '«丟丢予又弹彈恆恒散晰死票紹绍％久冗判场場彼思拽授极染極趣途鮮鲜监監七倾傾勾幅德斯暂暫栈棧波牌竖綠绿'
        '裁豎財财静靜餅饼审審椭橢純纯∙侦偵城措早棒氏浪涉飾饰！冻凍練織练织借冪塞尖尚巨市幂弱念慎暗桶泡渲漆瑞'
        '紧緊繫藉誰谁馬马骰麻貸贷迟遲門门∆乎冒弃徽怪抄擎棄沙球篇群診謂诊谓輕轻遍隻难難净淨錶韌韧万今侵勿卸古'
        '困墙央崩律惯慣抑敗材毫泊洞牆班盒究穿窄米良萬袋败走',
    17: '丰触觸豐×€《》世举九倒危友呢喜团團圾垃女扬拔拥掷揚搭擁擲敏暴曳楚泛漏男疏磅社稀答箱籍脑腦舉蜂街迭遭'
        '露仓仪倉儀办杀殺罗羅諸诸責費责费辦迁遷銷销黃黄°·丁亦俄却卻埠尊广廣承抓挑气氣糕糟納纳羣融覺觉賽赛逼'
        '遊鉛铅雕０东众听悬懸担擔東润潤烦煩聽謹谨賦赋閃闪顎颚\u202f≤伍伪冀匙呈塗契害尼巴忍悉惑慌扁扳抛抵押拋拨挨'
        '挪摁撥棵檐欢歡民涂淆烈烤熟狂甸疑盾矛脫脱蛋討讨豪队隊領领鼓１２３４５６７８９～僞刚剛匯叹嘆残殘洁温溃'
        '溫潔潰衆訴評评诉貫贯鋼钢顧顾',
    18: '仔伊佛俯刀努勻匀华吉圣士壹姆孟宅屋店府庭捆捨搞擅晚棉滞滯猜玩皮聖脈脉華萄葡蒙践踐遮閒闲隙頒颁鳴鸣－／'
        '￥兰携攜污灵穷窮蘭談谈貳鋪铺阳陽靈饋馈©÷○〇乐乱亂井亲仿伤伴健偷傷剝剥励勵卖卢厂厚吧哈哥善噩奥奧威'
        '孔孤寄履州幢廠弊弯彎忘恨患惊惰愿憎戏戲房扎扣扰拓拯挝捌捕掌握摩撇撾擾攻族昨枚柒棘樂欣欲毒派漂潮火熵營'
        '玖琐瑣病盡盧眠眼碎碰祖稽竟篡粒紫緬緻缅职職肆肯腊臘芬荷菩营衍衡親誕诞賣迎迷遏閏闰雞青韓韩願顛颠驚魔鸡'
        '麪ａｃｅｆｉｲﾄﾗ',
}
