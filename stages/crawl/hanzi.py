"""How common each character is in Chinese text, in bits (-log2 of its frequency): encoding.py scores candidate
decodings with it (a right decoding is common hanzi; a wrong one is rare hanzi, kana or Latin mojibake).

Built from sample-site text the encoding tests never serve, so they do not grade the table on its own source:
LibreOffice's zh-CN help (1424 pages) and Debian Reference chapters 1, 2 and 9 in zh-CN and zh-TW (the tests use
the other chapters, the FAQ and LilyPond): 555k simplified and 59k traditional characters, lxml text_content()
without <script>/<style>. Each script's text is completed by the other's converted with OpenCC (the zh-TW text
alone knows 1132 characters), and the two get equal weight: p = (p_simplified + p_traditional) / 2. Kept:
ideographs, CJK and general punctuation, full-width forms and common symbols with p >= 2^-18.5 (~3 occurrences),
1862 characters, grouped below by rounded cost. Deterministic; rebuild with

    PYTHONPATH=$PWD .venv/bin/python -m stages.crawl.hanzi data/sample-site/root
"""
from __future__ import annotations

MAX_BITS = 18


def _kept(c: str) -> bool:
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3000 <= o <= 0x303F or 0xFF01 <= o <= 0xFF5E or 0x2010 <= o <= 0x2027
            or 0x2190 <= o <= 0x22FF or 0x25A0 <= o <= 0x25FF or o in (0xA0, 0xA9, 0xAE, 0xB0, 0xB7, 0xD7))


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
    from collections import Counter

    counts = Counter(c for c in text if _kept(c))
    n = sum(counts.values())
    return {c: k / n for c, k in counts.items()}


def build(root) -> dict[int, str]:
    import math
    from pathlib import Path

    import opencc

    root = Path(root)
    ref = root / "usr/share/debian-reference"
    simp = _text(sorted((root / "usr/share/libreoffice/help/zh-CN").rglob("*.html"))
                 + [ref / f"{c}.zh-cn.html" for c in ("ch01", "ch02", "ch09")])
    trad = _text([ref / f"{c}.zh-tw.html" for c in ("ch01", "ch02", "ch09")])
    # Each script also gets the other's text converted by OpenCC: the zh-TW part alone knows 1134 characters.
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

    me = Path(__file__)
    head = me.read_text(encoding="utf-8").split("\nTABLE: ")[0]
    lines = ["", "TABLE: dict[int, str] = {"]
    for bits, chars in table.items():
        parts = [chars[i:i + 50] for i in range(0, len(chars), 50)]
        lines.append(f"    {bits}: " + "\n        ".join(repr(x) for x in parts) + ",")
    me.write_text(head + "\n".join(lines) + "\n}\n", encoding="utf-8")


if __name__ == "__main__":
    import sys

    _write(build(sys.argv[1]))

# bits -> the characters with that cost, most common first; written by _write.
TABLE: dict[int, str] = {
    5: '的。',
    6: '，「」中文用',
    7: '在式格字表一可以入选選件要示数數使',
    8: '定有目或行如和列引框符是置个個令下元本果包命模到对對作索值您此分择擇不插打上工例面指相为助名所',
    9: '段域位自档檔单單爲新标標“图圖”象将將其前按、方改回出点點算加能建录錄更动動系于於据據期返除具法然主'
        '序接函页頁保击擊时時向合输輸大日同后通後修之项項显顯小\xa0程案多性制形部容区區开開器存含度右你编了編也'
        '关關设公設',
    10: '重型号號它些第样片樣（条條被查块塊）版帮幫软軟正并当當间間者题題理应键應鍵最安提成移印体體请請放需义'
        '義窗内內子添整幻语語与與色计他計口来來始这這统会會統落辑輯並线線话話换換类類该該配只管复參参从從菜全'
        '息控左像问問过量過进進信空地卡替源每化已则則直找组組称稱注导導取平意複边邊库庫功次排言年访訪任结基結'
        '代必括操效比',
    11: '由明看透製等创創视視某高集删刪而月密特支码默碼常鼠及确確栏欄转轉变變光隔切距记記限且供外持藏二拖母根'
        '灯燈装但映裝属屬完天都何因率消板展三手词詞架现現箭别別宏脚腳充签好得素节節非生级串利級至启眉解即偏链'
        '註鏈就角填考匹先写寫钮鈕硬另快户见戶見认認端执執章起航围预圍預境超影尾范範…周两兩景矩览覽准準略：',
    12: '止载情載运齐運齊状啓狀颜址顏交筛篩头頭原差活误少想誤种心種籤带帶处护调處調護清布依否错曲錯立背连連演'
        '付服那均路人述仅僅闭再閉缩縮步首们們升音发机機發达達双隐佈隱雙望便允週粘资须水資須绘繪受各我未无無备'
        '希備搜检电檢電环環做照核套描扩垂擴概白併住收轴軸流–料许許态底態里实剪增實盘盤没固沒说典殊說磁稿捷碟'
        '附贴貼零才候务務证證占佔构致構洲百券把还還似求退网網价普價宽寬反告规規界省四旋留给台給断互斷斜终終屏'
        '恢為总维束維總浏折嚮瀏割送顺順缺',
    13: '够测份幕速夠測层層尺忽共批星道画试事介副；畫試侧权側權读讀滑真细免細失追居况足況拟若擬径假拉跟避徑析'
        '停适適防簽阵旁陣较較末金张張币幣挂掛封裏书書余虚很桌復虛餘旧货射拼播近舊貨缘緣局去係长長→弦决续踪決'
        '續蹤’己额額术经识經術識享献获邮亮獲獻郵报報赖賴着传释嵌技知傳釋讯訊国随乘刷跳國隨仍叉纔禁验驗储佳媒'
        '登粗儲简簡哪短覆绝聚絕远遠逻邏际初句際详顶五低商激降？詳頂么独造黑獨麼啟针援撤針响强強響减积減積亚亞'
        '滤史濾圆圓堆警',
    14: '满采逆滿辅輔纸阅推混紙閱十採裡议兼廓智議负阴負陰学翻學循拒槽累册声冊聲拆易美产舍精產历志延摘款浮让询'
        '詢讓伯家巧投簿补補灰英几划纲劃幾綱译淡物般譯础礎誌偶奇寸益跨阿六优员联優員聯游弧突靠尽吸抽滚滾杂雜离'
        '钥儘臺鑰離阶骤叫站階驟虑锁慮鎖待柱迴观觀尝伸嘗树倍半往掉耗越身樹坏壞汇笔扇破私筆微深著压归壓歸盖绕轮'
        '旦校矢秒遇歷繞蓋輪渐漸买味呼朝陷買彙横驱截署橫驅扫掃势蓝订守勢藍訂',
    15: '损艺趋損藝趨继讲—什圈姓植渡繼講绑綁递逗遵遞习叠疊習频察既頻汉邻漢鄰荐刻擦焦科花薦寻尋尔约纹购克八司'
        '品唯季彩戳繁阻車爾約紋購锚风松伺官感故泰股西逐錨風热车估剩力南太探永障熱瞭夹欧红客拷教夾歐紅专络账專'
        '絡賬富怎救牙冲协谚協諺偿缓险售歧油甚醒償緩衝險临贝檯臨貝严异纵干尤慢政梯父糊嚴異縱业帐杠帳曆業槓稳‘'
        '休施沉穩鬆坐萤镜卷座螢鏡忆缀虽钟千急沿稍策老辨隆憶綴鐘雖征论质徵論質',
    16: '丢弹恒绍予又散晰死票％丟彈恆紹场极鲜久冗判彼思拽授染趣途場極鮮监監倾暂栈竖绿财静饼七勾幅德斯波牌裁傾'
        '暫棧綠豎財靜餅审椭纯審橢純侦饰∙城措早棒氏浪涉！偵飾冻练织凍練織借幂紧谁马塞尖尚巨市弱念慎暗桶泡渲漆'
        '瑞骰麻冪緊繫藉誰馬贷迟门貸遲門弃诊谓轻难群∆乎冒徽怪抄擎沙球篇遍棄診謂輕隻難净韧淨錶韌万墙惯败今侵勿'
        '卸古困央崩律抑材毫泊洞班盒究穿窄米良袋走慣敗牆萬',
    17: '丰触觸豐举团扬拥掷脑×《》世九倒危友呢喜圾垃女拔搭敏暴曳楚泛漏男疏磅社稀答箱籍蜂街迭遭露團揚擁擲腦舉'
        '仓仪办杀罗诸责费迁销黄倉儀殺羅諸責費辦遷銷黃却广气纳觉赛铅°·丁亦俄埠尊承抓挑糕糟融逼雕０卻廣氣納羣'
        '覺賽遊鉛东众听悬担润烦谨赋闪颚懸擔東潤煩聽謹賦閃顎伪抛拨欢涂脱讨队领≤伍冀匙呈契害尼巴忍悉惑慌扁扳抵'
        '押挨挪摁棵檐民淆烈烤熟狂甸疑盾矛蛋豪鼓１２３４５６７８９～塗拋撥歡脫討隊領刚叹残洁温溃评诉贯钢顾僞剛'
        '匯嘆殘溫潔潰衆訴評貫鋼顧',
    18: '匀华圣滞脉践闲颁鸣仔伊佛俯刀努吉士壹姆孟宅屋店府庭捆搞擅晚棉猜玩皮萄葡蒙遮隙－／勻捨滯聖脈華踐閒頒鳴'
        '兰携灵穷谈铺阳馈污貳攜窮蘭談鋪陽靈饋乐乱亲伤剥励卖卢厂奥弯惊愿戏扰挝琐缅职腊营诞闰韩颠鸡©○〇井仿伴'
        '健偷厚吧哈哥善噩威孔孤寄履州幢弊忘恨患惰憎房扎扣拓拯捌捕掌握摩撇攻族昨枚柒棘欣欲毒派漂潮火熵玖病眠眼'
        '碎碰祖稽竟篡粒紫肆肯芬荷菩衍衡迎迷遏青魔ａｃｅｆｉ亂傷剝勵奧廠彎戲撾擾樂營瑣盡盧緬緻職臘親誕賣閏雞韓'
        '願顛驚麪',
}
