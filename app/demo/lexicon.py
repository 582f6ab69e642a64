"""Entry-level names of the demo world's classes in five languages.

Format per class: `Class name: en names | de | fr | es | it`, names separated by `/`. The
first English name is the most common; later ones are synonyms and inflections. Some strings
are homographs across languages on purpose (fr `chat` = cat, en `chat` = talk; fr `pain` =
bread; de `gift` = poison; it `cane` = dog).
"""

LEXICON_TEXT = """
Man: man/men/guy/dude | mann/männer | homme/hommes | hombre | uomo
Woman: woman/women/lady | frau/frauen | femme/femmes | mujer | donna
Boy: boy/boys/son | junge/jungs | garçon | niño/chico | ragazzo/bambino
Girl: girl/girls/daughter | mädchen | fille | niña/chica | ragazza/bambina
Dog: dog/dogs/puppy/doggy | hund/hunde/welpe | chien/chiot | perro/perrito | cane/cucciolo
Cat: cat/cats/kitten/kitty | katze/kater | chat/chaton | gato/gatito | gatto/micio
Horse: horse/horses/pony | pferd/pony | cheval | caballo | cavallo
Bird: bird/birds | vogel/vögel | oiseau | pájaro/ave | uccello
Duck: duck/ducks | ente | canard | pato | anatra
Swan: swan/swans | schwan | cygne | cisne | cigno
Owl: owl/owls | eule | hibou/chouette | búho | gufo
Parrot: parrot/parrots | papagei | perroquet | loro | pappagallo
Penguin: penguin/penguins | pinguin | manchot/pingouin | pingüino | pinguino
Chicken: chicken/hen/rooster | huhn/hahn | poule/coq | gallina | gallina
Sheep: sheep/lamb | schaf/lamm | mouton/agneau | oveja | pecora
Pig: pig/pigs/piglet | schwein | cochon | cerdo | maiale
Elephant: elephant/elephants | elefant | éléphant | elefante | elefante
Giraffe: giraffe/giraffes | giraffe | girafe | jirafa | giraffa
Zebra: zebra/zebras | zebra | zèbre | cebra | zebra
Lion: lion/lions | löwe | lion | león | leone
Tiger: tiger/tigers | tiger | tigre | tigre | tigre
Monkey: monkey/monkeys/ape | affe | singe | mono | scimmia
Bear: bear/bears | bär | ours | oso | orso
Fish: fish/fishes | fisch | poisson | pez | pesce
Butterfly: butterfly/butterflies | schmetterling | papillon | mariposa | farfalla
Bee: bee/bees | biene | abeille | abeja | ape
Car: car/cars/auto | auto/wagen | voiture | coche | macchina
Bicycle: bicycle/bike/bikes/cycling | fahrrad/rad | vélo | bicicleta | bicicletta/bici
Motorcycle: motorcycle/motorbike | motorrad | moto | moto | moto
Bus: bus/buses | bus | autobus/bus | autobús | autobus
Truck: truck/trucks/lorry | lastwagen/lkw | camion | camión | camion
Train: train/trains/railway | zug/bahn | train | tren | treno
Boat: boat/boats/ship/sailing | boot/schiff | bateau | barco | barca
Airplane: airplane/plane/aircraft | flugzeug | avion | avión | aereo
House: house/home | haus | maison | casa | casa
Skyscraper: skyscraper/skyline | wolkenkratzer | gratte+ciel | rascacielos | grattacielo
Tower: tower | turm | tour | torre | torre
Castle: castle | burg/schloss | château | castillo | castello
Lighthouse: lighthouse | leuchtturm | phare | faro | faro
Fountain: fountain | brunnen | fontaine | fuente | fontana
Tree: tree/trees | baum/bäume | arbre | árbol | albero
Flower: flower/flowers/bloom | blume/blumen | fleur/fleurs | flor/flores | fiore/fiori
Rose: rose/roses | rose | rose | rosa | rosa
Sunflower: sunflower/sunflowers | sonnenblume | tournesol | girasol | girasole
Mushroom: mushroom/mushrooms/fungi | pilz | champignon | seta | fungo
Pizza: pizza | pizza | pizza | pizza | pizza
Cake: cake/birthday+cake | kuchen/torte | gâteau | pastel/tarta | torta
Hamburger: hamburger/burger | hamburger | hamburger | hamburguesa | hamburger
Ice cream: ice+cream/icecream/gelato | eis | glace | helado | gelato
Bread: bread | brot | pain | pan | pane
Apple: apple/apples | apfel | pomme | manzana | mela
Banana: banana/bananas | banane | banane | plátano | banana
Orange: orange/oranges | orange | orange | naranja | arancia
Lemon: lemon/lemons | zitrone | citron | limón | limone
Strawberry: strawberry/strawberries | erdbeere | fraise | fresa | fragola
Tomato: tomato/tomatoes | tomate | tomate | tomate | pomodoro
Pumpkin: pumpkin/halloween | kürbis | citrouille | calabaza | zucca
Wine: wine/red+wine | wein | vin | vino | vino
Beer: beer/pint | bier | bière | cerveza | birra
Coffee: coffee/espresso/latte | kaffee | café | café | caffè
Guitar: guitar/guitarist | gitarre | guitare | guitarra | chitarra
Drum: drum/drums/drummer | schlagzeug/trommel | batterie | batería | batteria
Book: book/books | buch | livre | libro | libro
Laptop: laptop/computer | laptop | ordinateur | portátil | portatile
Mobile phone: phone/iphone/smartphone | handy | téléphone | móvil | telefono
Camera: camera | kamera | appareil+photo | cámara | fotocamera
Clock: clock | uhr | horloge | reloj | orologio
Chair: chair/chairs | stuhl | chaise | silla | sedia
Table: table | tisch | table | mesa | tavolo
Bench: bench | bank | banc | banco | panchina
Umbrella: umbrella/parasol | schirm/regenschirm | parapluie | paraguas | ombrello
Flag: flag/flags | fahne/flagge | drapeau | bandera | bandiera
Candle: candle/candles | kerze | bougie | vela | candela
Balloon: balloon/balloons | ballon | ballon | globo | palloncino
Kite: kite | drachen | cerf+volant | cometa | aquilone
Teddy bear: teddy/teddy+bear | teddybär | nounours | osito | orsacchiotto
Christmas tree: christmas+tree/christmas/xmas | weihnachtsbaum | sapin | árbol+de+navidad | albero+di+natale
Snowman: snowman | schneemann | bonhomme+de+neige | muñeco+de+nieve | pupazzo+di+neve
Football: football/soccer | fußball | football | fútbol | calcio
Skateboard: skateboard/skateboarding/skate | skateboard | skate | monopatín | skateboard
Surfboard: surfboard/surfing/surf | surfbrett | planche+de+surf | tabla+de+surf | tavola+da+surf
Hat: hat/cap | hut/mütze | chapeau | sombrero | cappello
Sunglasses: sunglasses/shades | sonnenbrille | lunettes+de+soleil | gafas+de+sol | occhiali+da+sole
Backpack: backpack/rucksack | rucksack | sac+à+dos | mochila | zaino
Tent: tent/camping | zelt | tente | tienda | tenda
Street light: streetlight/lamp | laterne | lampadaire | farola | lampione
Traffic light: traffic+light | ampel | feu | semáforo | semaforo
Window: window/windows | fenster | fenêtre | ventana | finestra
Door: door/doors | tür | porte | puerta | porta
"""

LANGUAGES = ("en", "de", "fr", "es", "it")


def parse_lexicon(text: str = LEXICON_TEXT) -> dict:
    """Returns `{class name: {language: [names]}}` with names in their YFCC form (`+` for space)."""
    out = {}
    for line in filter(None, (l.strip() for l in text.splitlines())):
        name, _, rest = line.partition(":")
        columns = [c.strip() for c in rest.split("|")]
        if len(columns) != len(LANGUAGES):
            raise ValueError(f"lexicon line needs {len(LANGUAGES)} languages: {line!r}")
        out[name.strip()] = {lang: col.split("/") for lang, col in zip(LANGUAGES, columns)}
    return out
