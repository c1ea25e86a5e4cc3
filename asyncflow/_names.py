"""Run names: `adjective-animal` for flow runs, slugs for flow names."""

from __future__ import annotations

import random

_ADJECTIVES = (  # noqa: SIM905 - a list literal of 150 quoted words reads worse than this text
    "able agile amber ancient arctic astute attentive autumn azure bold brave bright brisk calm candid "
    "capable careful cerulean charming cheerful chestnut clever cobalt cosmic courageous crafty crimson "
    "curious daring dashing dazzling delicate dependable diligent dynamic eager earnest electric elegant "
    "emerald energetic fearless festive fiery flawless fluffy friendly gentle gifted glorious golden "
    "graceful grinning groovy hallowed handsome happy hardy hearty heroic holistic honest hopeful humble "
    "imposing indigo intrepid jolly jovial keen kind lively loyal lucky magenta majestic marvellous "
    "mellow merry mighty modest nimble noble olive optimistic outstanding patient peaceful pink placid "
    "polite precious pristine proud quick quiet radiant rapid resilient ruby rustic saffron sage scarlet "
    "serene shiny silver sincere smart snowy spectral speedy spirited steady stellar sturdy sunny swift "
    "taupe tactful teal tidy tireless tranquil turquoise unique upbeat valiant vehement versatile violet "
    "vivid warm whimsical wise witty zealous"
).split()

_ANIMALS = (  # noqa: SIM905 - a list literal of 150 quoted words reads worse than this text
    "aardvark albatross alligator alpaca ammonite anaconda antelope armadillo axolotl badger barracuda "
    "bat beaver bee bison bobcat buffalo butterfly camel caracal caribou cassowary catfish chameleon "
    "cheetah chicken chimpanzee chinchilla cobra condor cormorant coua cougar coyote crab crane cricket "
    "crocodile crow cuckoo dingo dolphin donkey dove dragonfly duck eagle eel egret elephant elk emu "
    "falcon ferret finch flamingo fox frog gazelle gecko gibbon giraffe gnu goose gopher gorilla "
    "grasshopper grouse gull hamster hare hawk hedgehog heron hippo hornet horse hummingbird hyena ibex "
    "ibis iguana impala jackal jaguar jellyfish kangaroo kingfisher kiwi koala lemming lemur leopard "
    "lion lizard llama lobster loon lynx macaw magpie manatee mandrill marmot meerkat mink mole "
    "mongoose moose narwhal newt nightingale ocelot octopus orca oriole ostrich otter owl panda "
    "pangolin panther parrot peacock pelican penguin petrel pheasant pig pigeon platypus porcupine "
    "puffin puma python quail rabbit raccoon raven reindeer rhino robin salamander salmon seahorse "
    "seal shark sheep shrew skunk sloth snail sparrow spider squid squirrel starling stork swan tapir "
    "tarsier tiger toad toucan turaco turtle viper vulture walrus warbler weasel whale wolf wombat "
    "woodpecker yak zebra"
).split()

_rng = random.Random()


def generate_flow_run_name() -> str:
    return f"{_rng.choice(_ADJECTIVES)}-{_rng.choice(_ANIMALS)}"


def flow_name_from_function(fn_name: str) -> str:
    if fn_name == "<lambda>":
        return "unknown-lambda"
    return fn_name.replace("_", "-")
