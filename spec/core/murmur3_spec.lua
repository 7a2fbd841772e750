-- relay.murmur3 (lua/relay/murmur3.lua): MurmurHash3 x86 32-bit, seed 0, against the reference
-- implementation's vectors (SMHasher's, and the values other ports publish), every tail length
-- (0 to 3 bytes after the 4-byte blocks), and bytes above 127. Pure Lua: no host needed.
local murmur3 = require "relay.murmur3"

describe("relay.murmur3", function()
  it("gives the reference answers", function()
    assert.equal(0, murmur3.hash(""))
    assert.equal(0x248bfa47, murmur3.hash("hello"))
    assert.equal(0xb3dd93fa, murmur3.hash("abc"))
    assert.equal(0x2e4ff723, murmur3.hash("The quick brown fox jumps over the lazy dog"))
  end)

  it("covers every tail length and every byte value", function()
    -- from SMHasher's MurmurHash3_x86_32 (a Python transcription); lengths 4..7 end in each tail
    local want = { [4] = 0x43ed676a, [5] = 0xe89b9af6, [6] = 0x6181c085, [7] = 0x883c9b06 }
    for n, h in pairs(want) do
      assert.equal(h, murmur3.hash(("abcdefg"):sub(1, n)), n .. " bytes")
    end
    assert.equal(0x3c1fd061, murmur3.hash("\255\254\253\128"))
    assert.equal(0xd2bef2dc, murmur3.hash("\255\254\253"))
    assert.equal(0x5769ce95, murmur3.hash("\128\129\130\131\132\133\134"))
  end)

  it("is unsigned and 32-bit for any input", function()
    for i = 0, 255 do
      local h = murmur3.hash(string.char(i):rep(i % 9))
      assert.is_true(h >= 0 and h < 2 ^ 32 and h % 1 == 0)
    end
  end)
end)
